//! The tamper-evident audit log format (threat L1): JSON lines, each entry
//! hash-chained to the previous one, with periodic checkpoints signed by the
//! writer's Ed25519 identity key. Verification says where the file was
//! edited, reordered, deleted from or truncated, and tells an interrupted
//! append (a torn tail, threat S3) from tampering.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::verify_ed25519;

/// The event name of checkpoint entries.
pub const CHECKPOINT: &str = "checkpoint";

/// The event the writer appends after cutting off a torn tail (threat S3);
/// its detail names the bytes dropped and the entry it resumed from.
pub const AUDIT_REPAIRED: &str = "audit_repaired";

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
    /// Whole entries read (the torn tail, if any, is not one).
    pub entries: u64,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    /// Hash of the last whole entry.
    pub head: String,
    /// Entries after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// Bytes an interrupted append left after the last whole entry (S3).
    pub torn_tail: Option<TornTail>,
    /// `audit_repaired` entries: torn tails the writer cut off earlier.
    pub repairs: Vec<Repair>,
}

/// What an interrupted append leaves at the end of the log (threat S3): bytes
/// after the last newline that are the beginning of the next entry, or that
/// whole entry short of its newline. The append that wrote them never returned
/// success, so nothing was released on their strength; they are not tampering,
/// and the writer cuts them off when it opens the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Sequence number of the last whole entry before it (0 if there is none).
    pub after_seq: u64,
    /// Where it starts: the length in bytes of the log's whole entries.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// SHA-256 of its bytes, hex: identifies what was dropped without keeping it.
    pub sha256: String,
}

impl TornTail {
    /// The operator-facing sentence, as `permafrostctl audit verify` prints it.
    pub fn describe(&self) -> String {
        format!(
            "torn tail: {} bytes after entry #{} (an interrupted write, not tampering); \
             the daemon repairs it at start",
            self.len, self.after_seq
        )
    }
}

/// An `audit_repaired` entry found in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// Its sequence number.
    pub seq: u64,
    /// When the writer cut the torn tail off (Unix seconds).
    pub ts: u64,
    /// How many bytes it dropped, as the entry says.
    pub dropped_bytes: Option<u64>,
}

/// The running state of a chain being verified, one whole entry at a time.
#[derive(Clone)]
struct Chain<'k> {
    keys: &'k [VerifyingKey],
    prev: String,
    seq: u64,
    checkpoints: u64,
    since_checkpoint: u64,
    repairs: Vec<Repair>,
}

impl<'k> Chain<'k> {
    fn new(keys: &'k [VerifyingKey]) -> Self {
        Chain {
            keys,
            prev: genesis(),
            seq: 0,
            checkpoints: 0,
            since_checkpoint: 0,
            repairs: Vec::new(),
        }
    }

    /// Checks that `e`, read from line `n`, is the next entry of the chain.
    fn accept(&mut self, n: usize, e: AuditEntry) -> Result<(), String> {
        if e.seq != self.seq + 1 {
            return Err(format!(
                "line {n}: sequence {} where {} was expected (entries deleted, duplicated or reordered)",
                e.seq,
                self.seq + 1
            ));
        }
        if e.prev != self.prev {
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
            if !self.keys.is_empty() && !self.keys.contains(&named) {
                return Err(format!(
                    "line {n}: checkpoint signed by an unexpected key {key_hex}"
                ));
            }
            if !verify_ed25519(&named, &checkpoint_message(e.seq, &e.prev), &sig) {
                return Err(format!("line {n}: checkpoint signature invalid"));
            }
            self.checkpoints += 1;
            self.since_checkpoint = 0;
        } else {
            if e.event == AUDIT_REPAIRED {
                self.repairs.push(Repair {
                    seq: e.seq,
                    ts: e.ts,
                    dropped_bytes: e.detail.get("dropped_bytes").and_then(|v| v.as_u64()),
                });
            }
            self.since_checkpoint += 1;
        }
        self.prev = e.hash;
        self.seq = e.seq;
        Ok(())
    }
}

/// Verifies a whole log. `keys`: the writer's identity keys that checkpoints
/// must be signed by (if empty, the key named in each checkpoint is used,
/// which proves consistency but not authorship). `head`: the expected
/// `(entries, hash)` of the log, e.g. from the node's status, to detect truncation.
///
/// `Ok` with [`VerifyReport::torn_tail`] set means every whole entry verifies
/// and the file ends in an interrupted append (S3); `Err` means tampering or
/// corruption and names the line.
pub fn verify(
    text: &str,
    keys: &[VerifyingKey],
    head: Option<(u64, &str)>,
) -> Result<VerifyReport, String> {
    verify_bytes(text.as_bytes(), keys, head)
}

/// [`verify`] on the file's raw bytes: an append cut inside a multi-byte
/// character leaves a file that is not UTF-8, and that is still a torn tail.
pub fn verify_bytes(
    bytes: &[u8],
    keys: &[VerifyingKey],
    head: Option<(u64, &str)>,
) -> Result<VerifyReport, String> {
    // The writer ends every entry with a newline, so whatever follows the
    // last newline is what an interrupted append left, or an edit.
    let whole_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (whole, tail) = bytes.split_at(whole_len);
    let mut chain = Chain::new(keys);
    let mut lines = 0usize;
    if let Some(body) = whole.strip_suffix(b"\n") {
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            lines = n;
            let line = std::str::from_utf8(line)
                .map_err(|_| format!("line {n}: not UTF-8 text (file edited)"))?;
            if line.trim().is_empty() {
                return Err(format!(
                    "line {n}: empty line (entries deleted or file edited)"
                ));
            }
            let e: AuditEntry = serde_json::from_str(line)
                .map_err(|err| format!("line {n}: not an audit entry ({err})"))?;
            chain.accept(n, e)?;
        }
    }
    let torn_tail = if tail.is_empty() {
        None
    } else {
        check_torn(lines + 1, tail, &chain)?;
        Some(TornTail {
            after_seq: chain.seq,
            offset: whole_len as u64,
            len: tail.len() as u64,
            sha256: hex::encode(Sha256::digest(tail)),
        })
    };
    if let Some((entries, hash)) = head {
        if chain.seq < entries {
            let torn = if torn_tail.is_some() {
                " and a torn tail"
            } else {
                ""
            };
            return Err(format!(
                "log truncated: {} entries{torn}, the writer reports {entries}",
                chain.seq
            ));
        }
        if chain.seq == entries && chain.prev != hash {
            return Err(format!(
                "log head {} differs from the writer's {hash}",
                chain.prev
            ));
        }
    }
    Ok(VerifyReport {
        entries: chain.seq,
        checkpoints: chain.checkpoints,
        head: chain.prev,
        unsigned_tail: chain.since_checkpoint,
        torn_tail,
        repairs: chain.repairs,
    })
}

/// `Ok` if `tail` (line `n`, no newline) can be what an interrupted append of
/// the next entry left: a prefix of a JSON object, or the whole next entry
/// short of its newline. Anything else is an edit and is reported like one.
fn check_torn(n: usize, tail: &[u8], chain: &Chain<'_>) -> Result<(), String> {
    let text = match std::str::from_utf8(tail) {
        Ok(text) => text,
        // Cut inside a multi-byte character: judge the whole characters before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&tail[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Err(format!("line {n}: not UTF-8 text (file edited)")),
    };
    if !text.starts_with('{') {
        return Err(format!(
            "line {n}: {} bytes after the last entry that do not begin one (file edited)",
            tail.len()
        ));
    }
    match serde_json::from_str::<AuditEntry>(text) {
        // The input ended inside the object: exactly what a cut-off write leaves.
        Err(err) if err.is_eof() => Ok(()),
        Err(err) => Err(format!("line {n}: not an audit entry ({err})")),
        // Complete but for its newline: a torn write only if it is the entry
        // the writer would have appended next.
        Ok(e) => chain.clone().accept(n, e),
    }
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

    /// The file as the writer leaves it: every entry ends with a newline.
    fn file(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn last(lines: &[String]) -> AuditEntry {
        serde_json::from_str(lines.last().expect("a line")).expect("json")
    }

    /// The entry an append after `lines` would write, with non-ASCII text so
    /// cuts can fall inside a multi-byte character.
    fn next_line(lines: &[String]) -> String {
        let prev = last(lines);
        let e = AuditEntry::new(
            prev.seq + 1,
            2000,
            "n1",
            "share_released",
            serde_json::json!({"request": "wd-ünïcødé-€", "digest": "ab".repeat(32), "n": [1, 2.5, -3, true, null]}),
            &prev.hash,
        );
        serde_json::to_string(&e).expect("json")
    }

    #[test]
    fn intact_log_verifies() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let text = file(&log(12, &id));
        let r = verify(&text, &[id.identity_key()], None).expect("intact");
        assert_eq!((r.entries, r.checkpoints, r.unsigned_tail), (12, 3, 0));
        assert_eq!((r.torn_tail, r.repairs), (None, vec![]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// L1: any single edit, deletion, swap or truncation is detected.
        #[test]
        fn l1_random_tampering_always_detected(kind in 0u8..4, at in 0usize..12, byte in 0usize..200, other in 0usize..12, newline in any::<bool>()) {
            let id = NodeIdentity::generate(&mut rand::thread_rng());
            let mut lines = log(12, &id);
            let head = (12u64, last(&lines).hash);
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
            // With or without the last newline: a missing newline must not hide an edit.
            let text = if newline { file(&lines) } else { lines.join("\n") };
            prop_assert!(verify(&text, &[id.identity_key()], Some((head.0, &head.1))).is_err());
        }
    }

    /// S3: whatever prefix of the next entry an interrupted append left (every
    /// cut, including inside a multi-byte character and just before the
    /// newline), it is a torn tail after the last whole entry, never tampering.
    #[test]
    fn s3_every_cut_of_an_append_is_a_torn_tail() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let lines = log(12, &id);
        let whole = file(&lines);
        let next = format!("{}\n", next_line(&lines));
        let head = last(&lines).hash;
        for cut in 1..next.len() {
            let mut bytes = whole.clone().into_bytes();
            bytes.extend_from_slice(&next.as_bytes()[..cut]);
            let r = verify_bytes(&bytes, &[id.identity_key()], Some((12, &head)))
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!((r.entries, &r.head), (12, &head), "cut {cut}");
            let torn = r.torn_tail.expect("torn tail");
            assert_eq!(
                (torn.after_seq, torn.offset, torn.len),
                (12, whole.len() as u64, cut as u64)
            );
            assert_eq!(
                torn.sha256,
                hex::encode(Sha256::digest(&next.as_bytes()[..cut]))
            );
            // The writer never reported the torn entry: a head beyond it is truncation.
            let err = verify_bytes(&bytes, &[], Some((13, &head))).expect_err("truncated");
            assert!(
                err.contains("truncated") && err.contains("torn tail"),
                "{err}"
            );
        }
    }

    #[test]
    fn s3_torn_tail_is_described_as_an_interrupted_write() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let lines = log(5, &id);
        let text = file(&lines) + &next_line(&lines)[..30];
        let torn = verify(&text, &[], None)
            .expect("not tampering")
            .torn_tail
            .expect("torn");
        assert_eq!(
            torn.describe(),
            "torn tail: 30 bytes after entry #5 (an interrupted write, not tampering); \
             the daemon repairs it at start"
        );
        // A log whose very first append was cut.
        let r = verify(&next_line(&lines)[..10], &[], None).expect("torn only");
        assert_eq!((r.entries, r.torn_tail.map(|t| t.after_seq)), (0, Some(0)));
    }

    #[test]
    fn s3_unterminated_edited_last_line_is_tampering() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let lines = log(6, &id);
        // The next entry written in full but its newline missing: torn (the append failed).
        let next = next_line(&lines);
        let r = verify(&(file(&lines) + &next), &[], None).expect("torn");
        assert_eq!(r.entries, 6);
        assert!(r.torn_tail.is_some());
        // The same bytes edited: the hash no longer matches, so it is an edit.
        let edited = next.replace("wd-", "wx-");
        let err = verify(&(file(&lines) + &edited), &[], None).expect_err("edited");
        assert!(err.starts_with("line 7: hash mismatch"), "{err}");
        // A whole entry that does not follow entry 6 is not a torn append either.
        let err = verify(&(file(&lines) + &lines[2]), &[], None).expect_err("replayed");
        assert!(err.starts_with("line 7: sequence 3"), "{err}");
        // Trailing bytes that do not begin an entry.
        let err = verify(&(file(&lines) + "xx"), &[], None).expect_err("garbage");
        assert!(err.starts_with("line 7:"), "{err}");
        let err = verify(&(file(&lines) + "{\"seq\":7}"), &[], None).expect_err("garbage");
        assert!(err.starts_with("line 7: not an audit entry"), "{err}");
    }

    #[test]
    fn s3_newline_terminated_fragment_is_tampering() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let lines = log(6, &id);
        let next = next_line(&lines);
        let fragment = &next[..40];
        let err = verify(&format!("{}{fragment}\n", file(&lines)), &[], None)
            .expect_err("a damaged whole line");
        assert!(err.starts_with("line 7: not an audit entry"), "{err}");
        // What the old writer left after a full disk: the fragment, then the
        // next entry appended onto the same line.
        let err = verify(&format!("{}{fragment}{next}\n", file(&lines)), &[], None)
            .expect_err("torn line extended");
        assert!(err.starts_with("line 7:"), "{err}");
        // A damaged line in the middle stays tampering even with a torn tail after it.
        let mut damaged = lines.clone();
        damaged[3] = damaged[3][..20].to_string();
        let err = verify(&(file(&damaged) + fragment), &[], None).expect_err("middle");
        assert!(err.starts_with("line 4:"), "{err}");
    }

    #[test]
    fn s3_audit_repaired_entry_verifies_and_is_reported() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let mut lines = log(5, &id);
        let prev = last(&lines);
        let e = AuditEntry::new(
            6,
            3000,
            "n1",
            AUDIT_REPAIRED,
            serde_json::json!({"dropped_bytes": 77, "dropped_sha256": "00".repeat(32), "resumed_after_seq": 5, "resumed_after_hash": prev.hash}),
            &prev.hash,
        );
        lines.push(serde_json::to_string(&e).expect("json"));
        let r = verify(&file(&lines), &[id.identity_key()], Some((6, &e.hash))).expect("intact");
        assert_eq!(r.entries, 6);
        assert_eq!(
            r.repairs,
            vec![Repair {
                seq: 6,
                ts: 3000,
                dropped_bytes: Some(77)
            }]
        );
    }

    #[test]
    fn forged_rewrite_with_another_key_is_detected() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let forger = NodeIdentity::generate(&mut rand::thread_rng());
        let text = file(&log(8, &forger));
        let err = verify(&text, &[id.identity_key()], None).unwrap_err();
        assert!(err.contains("unexpected key"), "{err}");
    }
}
