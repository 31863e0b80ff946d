//! The tamper-evident audit log format (threat L1): JSON lines, each entry
//! hash-chained to the previous one, with periodic checkpoints signed by the
//! writer's Ed25519 identity key. Verification says where the file was
//! edited, reordered, deleted from or truncated.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::verify_ed25519;

/// The event name of checkpoint entries.
pub const CHECKPOINT: &str = "checkpoint";

/// One audit entry as written (one JSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1-based sequence number.
    pub seq: u64,
    /// Unix seconds.
    pub ts: u64,
    /// Who wrote it (node or coordinator id).
    pub actor: String,
    /// What happened, e.g. `share_released`, `refused`, `unsealed`.
    pub event: String,
    /// Event fields (object with sorted keys).
    pub detail: serde_json::Value,
    /// Hash of the previous entry (hex; 64 zeros for the first).
    pub prev: String,
    /// Hash of this entry (hex).
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    ts: u64,
    actor: &'a str,
    event: &'a str,
    detail: &'a serde_json::Value,
    prev: &'a str,
}

/// Hash of the first entry's `prev`.
pub fn genesis() -> String {
    hex::encode([0u8; 32])
}

impl AuditEntry {
    /// Builds an entry chained to `prev` and computes its hash.
    pub fn new(
        seq: u64,
        ts: u64,
        actor: &str,
        event: &str,
        detail: serde_json::Value,
        prev: &str,
    ) -> Self {
        let mut e = AuditEntry {
            seq,
            ts,
            actor: actor.to_string(),
            event: event.to_string(),
            detail,
            prev: prev.to_string(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    /// Recomputes the hash from the entry's fields.
    pub fn compute_hash(&self) -> String {
        let body = serde_json::to_vec(&Hashed {
            seq: self.seq,
            ts: self.ts,
            actor: &self.actor,
            event: &self.event,
            detail: &self.detail,
            prev: &self.prev,
        })
        .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"PERMAFROST/AUDIT/v1");
        h.update(&body);
        hex::encode(h.finalize())
    }
}

/// What a checkpoint signs: the sequence number and hash of the entry before it.
pub fn checkpoint_message(seq: u64, prev: &str) -> Vec<u8> {
    let mut m = b"PERMAFROST/AUDIT-CHECKPOINT/v1".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev.as_bytes());
    m
}

/// A successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    /// Hash of the last entry.
    pub head: String,
    /// Entries after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
}

/// Verifies a whole log. `keys`: the writer's identity keys that checkpoints
/// must be signed by (if empty, the key named in each checkpoint is used,
/// which proves consistency but not authorship). `head`: the expected
/// `(entries, hash)` of the log, e.g. from the node's status, to detect truncation.
pub fn verify(
    text: &str,
    keys: &[VerifyingKey],
    head: Option<(u64, &str)>,
) -> Result<VerifyReport, String> {
    let mut prev = genesis();
    let mut seq = 0u64;
    let mut checkpoints = 0u64;
    let mut since_checkpoint = 0u64;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            return Err(format!(
                "line {n}: empty line (entries deleted or file edited)"
            ));
        }
        let e: AuditEntry = serde_json::from_str(line)
            .map_err(|err| format!("line {n}: not an audit entry ({err})"))?;
        if e.seq != seq + 1 {
            return Err(format!(
                "line {n}: sequence {} where {} was expected (entries deleted, duplicated or reordered)",
                e.seq,
                seq + 1
            ));
        }
        if e.prev != prev {
            return Err(format!(
                "line {n}: does not chain to line {} (entries removed, inserted or reordered)",
                n - 1
            ));
        }
        if e.compute_hash() != e.hash {
            return Err(format!(
                "line {n}: hash mismatch (entry {} was edited)",
                e.seq
            ));
        }
        if e.event == CHECKPOINT {
            let key_hex = e
                .detail
                .get("key")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let sig = e
                .detail
                .get("signature")
                .and_then(|v| v.as_str())
                .and_then(|s| hex::decode(s).ok())
                .unwrap_or_default();
            let named = crate::identity::parse_ed25519_hex("checkpoint key", key_hex)
                .map_err(|err| format!("line {n}: checkpoint key unreadable ({err})"))?;
            if !keys.is_empty() && !keys.contains(&named) {
                return Err(format!(
                    "line {n}: checkpoint signed by an unexpected key {key_hex}"
                ));
            }
            if !verify_ed25519(&named, &checkpoint_message(e.seq, &e.prev), &sig) {
                return Err(format!("line {n}: checkpoint signature invalid"));
            }
            checkpoints += 1;
            since_checkpoint = 0;
        } else {
            since_checkpoint += 1;
        }
        prev = e.hash;
        seq = e.seq;
    }
    if let Some((entries, hash)) = head {
        if seq < entries {
            return Err(format!(
                "log truncated: {seq} entries, the writer reports {entries}"
            ));
        }
        if seq == entries && prev != hash {
            return Err(format!("log head {prev} differs from the writer's {hash}"));
        }
    }
    Ok(VerifyReport {
        entries: seq,
        checkpoints,
        head: prev,
        unsigned_tail: since_checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeIdentity;
    use proptest::prelude::*;

    fn log(n: u64, id: &NodeIdentity) -> Vec<String> {
        let mut prev = genesis();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let e = if seq % 4 == 0 {
                let sig = id.sign(&checkpoint_message(seq, &prev));
                AuditEntry::new(
                    seq,
                    1000 + seq,
                    "n1",
                    CHECKPOINT,
                    serde_json::json!({"key": hex::encode(id.identity_key().as_bytes()), "signature": hex::encode(sig)}),
                    &prev,
                )
            } else {
                AuditEntry::new(
                    seq,
                    1000 + seq,
                    "n1",
                    "share_released",
                    serde_json::json!({"request": format!("wd-{seq}")}),
                    &prev,
                )
            };
            prev = e.hash.clone();
            lines.push(serde_json::to_string(&e).expect("json"));
        }
        lines
    }

    #[test]
    fn intact_log_verifies() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let text = log(12, &id).join("\n");
        let r = verify(&text, &[id.identity_key()], None).expect("intact");
        assert_eq!((r.entries, r.checkpoints, r.unsigned_tail), (12, 3, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// L1: any single edit, deletion, swap or truncation is detected.
        #[test]
        fn l1_random_tampering_always_detected(kind in 0u8..4, at in 0usize..12, byte in 0usize..200, other in 0usize..12) {
            let id = NodeIdentity::generate(&mut rand::thread_rng());
            let mut lines = log(12, &id);
            let head = {
                let last: AuditEntry = serde_json::from_str(&lines[11]).expect("json");
                (12u64, last.hash)
            };
            match kind {
                0 => {
                    // Edit one character of one line.
                    let line = &mut lines[at];
                    let pos = byte % line.len();
                    let mut bytes = line.clone().into_bytes();
                    bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
                    match String::from_utf8(bytes) {
                        Ok(s) if s != *line => *line = s,
                        _ => return Ok(()),
                    }
                }
                1 => { lines.remove(at); }
                2 => {
                    if at == other { return Ok(()); }
                    lines.swap(at, other);
                }
                _ => { lines.truncate(at); }
            }
            let text = lines.join("\n");
            prop_assert!(verify(&text, &[id.identity_key()], Some((head.0, &head.1))).is_err());
        }
    }

    #[test]
    fn forged_rewrite_with_another_key_is_detected() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let forger = NodeIdentity::generate(&mut rand::thread_rng());
        let text = log(8, &forger).join("\n");
        let err = verify(&text, &[id.identity_key()], None).unwrap_err();
        assert!(err.contains("unexpected key"), "{err}");
    }
}
