//! `permafrostctl audit verify`: checks a node's or the coordinator's audit
//! log offline (threat L1) with `permafrost_core::audit::verify`, telling an
//! interrupted write at the end (a torn tail, threat S3) from tampering.
//!
//! Outcomes: every whole entry verifies → success (exit 0), with a
//! `torn tail: ...` line if the file ends in an interrupted append, since the
//! log is intact and the daemon cuts it off at its next start; anything else
//! → [`CtlError::AuditInvalid`] naming the line (exit 1).

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use permafrost_core::audit::VerifyReport;

use crate::CtlError;

/// The head a writer reports (`node status`: audit entries and audit head):
/// with it, truncating the log's tail is detected too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedHead {
    /// Number of entries the writer has written.
    pub entries: u64,
    /// Hash of its last entry, lower-case hex.
    pub hash: String,
}

/// Parses `ENTRIES:HASHHEX` (as `node status` prints it).
pub fn parse_head(text: &str) -> Result<ExpectedHead, String> {
    let (entries, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not ENTRIES:HASHHEX (e.g. 42:9f86d0...)"))?;
    let entries: u64 = entries
        .trim()
        .parse()
        .map_err(|_| format!("{entries:?} (before the ':') is not a number of entries"))?;
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{hash:?} (after the ':') is not a 32-byte hash in hex (64 digits)"
        ));
    }
    Ok(ExpectedHead { entries, hash })
}

/// Parses an Ed25519 public key in hex (a node's identity key).
pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    permafrost_core::identity::parse_ed25519_hex("--key", text.trim()).map_err(|e| e.to_string())
}

/// Verifies the log at `path`; a failure (tampering or corruption) names the
/// file and the line. A torn tail is not a failure: it is in
/// [`VerifyReport::torn_tail`].
pub fn verify_file(
    path: &Path,
    keys: &[VerifyingKey],
    head: Option<&ExpectedHead>,
) -> Result<VerifyReport, CtlError> {
    // Bytes, not text: an append cut inside a multi-byte character is still a torn tail.
    let bytes = std::fs::read(path).map_err(|e| CtlError::io(path, e))?;
    permafrost_core::audit::verify_bytes(&bytes, keys, head.map(|h| (h.entries, h.hash.as_str())))
        .map_err(|reason| CtlError::AuditInvalid {
            path: path.to_path_buf(),
            reason,
        })
}

/// What a successful verification means, in lines for the operator.
pub fn describe_report(r: &VerifyReport, keyed: bool, head_checked: bool) -> String {
    let mut out = format!(
        "intact: {} entries, {} signed checkpoint(s), head {}\n",
        r.entries, r.checkpoints, r.head
    );
    if r.checkpoints == 0 {
        out.push_str(&format!(
            "note: no signed checkpoint yet: the {} entries are hash-chained but nothing ties them to a writer's key{}\n",
            r.entries,
            if keyed { ", so --key was not used" } else { "" }
        ));
    } else {
        if !keyed {
            out.push_str(
                "note: no --key given, so checkpoints were checked against the key each one names; \
                 that proves consistency, not who wrote the log (pass the node's identity key from the manifest)\n",
            );
        }
        if r.unsigned_tail > 0 {
            out.push_str(&format!(
                "note: the last {} entr{} come after the last checkpoint: hash-chained but not yet signed\n",
                r.unsigned_tail,
                if r.unsigned_tail == 1 { "y" } else { "ies" }
            ));
        }
    }
    if let Some(torn) = &r.torn_tail {
        out.push_str(&torn.describe());
        out.push('\n');
    }
    for repair in &r.repairs {
        let dropped = repair.dropped_bytes.map_or_else(
            || "a torn tail".to_string(),
            |n| format!("a torn tail of {n} bytes"),
        );
        out.push_str(&format!(
            "repaired: entry #{} (ts {}) records that the writer cut off {dropped} left by an interrupted write\n",
            repair.seq, repair.ts
        ));
    }
    if !head_checked {
        out.push_str(
            "note: no --head given, so a cut-off tail cannot be detected \
             (pass --head ENTRIES:HASH from `permafrostctl node status`)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn head_parses_and_normalizes_case() {
        let h = parse_head(&format!("42:{}", HASH.to_uppercase())).expect("head");
        assert_eq!(
            h,
            ExpectedHead {
                entries: 42,
                hash: HASH.into()
            }
        );
    }

    #[test]
    fn malformed_heads_say_which_half_is_wrong() {
        assert!(parse_head(HASH)
            .expect_err("no colon")
            .contains("ENTRIES:HASHHEX"));
        assert!(parse_head(&format!("x:{HASH}"))
            .expect_err("entries")
            .contains("before the ':'"));
        assert!(parse_head("3:abcd")
            .expect_err("short hash")
            .contains("after the ':'"));
        assert!(parse_head(&format!("3:{}zz", &HASH[..62]))
            .expect_err("not hex")
            .contains("after the ':'"));
    }

    /// `n` chained entries, and each line as the writer writes it (with its newline).
    fn chain(n: u64, event: impl Fn(u64) -> (&'static str, serde_json::Value)) -> Vec<String> {
        use permafrost_core::audit::{genesis, AuditEntry};
        let mut prev = genesis();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let (name, detail) = event(seq);
            let e = AuditEntry::new(seq, 100 + seq, "n1", name, detail, &prev);
            prev = e.hash.clone();
            lines.push(serde_json::to_string(&e).expect("json") + "\n");
        }
        lines
    }

    fn refused(_: u64) -> (&'static str, serde_json::Value) {
        ("refused", serde_json::json!({}))
    }

    #[test]
    fn tampered_file_error_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut lines = chain(3, refused);
        std::fs::write(&path, lines.concat()).expect("write");
        let ok = verify_file(&path, &[], None).expect("intact");
        assert_eq!((ok.entries, ok.unsigned_tail, ok.torn_tail), (3, 3, None));
        let head = ExpectedHead {
            entries: 3,
            hash: ok.head.clone(),
        };
        verify_file(&path, &[], Some(&head)).expect("head matches");

        lines[1] = lines[1].replace("refused", "released");
        std::fs::write(&path, lines.concat()).expect("write");
        let err = verify_file(&path, &[], None)
            .expect_err("edited")
            .to_string();
        assert!(err.contains("audit.log") && err.contains("line 2"), "{err}");

        std::fs::write(&path, lines[..1].concat()).expect("write");
        let err = verify_file(&path, &[], Some(&head))
            .expect_err("truncated")
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn s3_torn_tail_is_reported_as_an_interrupted_write_not_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let lines = chain(4, refused);
        let fragment = &lines[3][..25];
        std::fs::write(&path, lines[..3].concat() + fragment).expect("write");
        let r = verify_file(&path, &[], None).expect("a torn tail is not a failure");
        assert_eq!(r.entries, 3);
        let text = describe_report(&r, false, false);
        assert!(
            text.contains(
                "torn tail: 25 bytes after entry #3 (an interrupted write, not tampering); \
                 the daemon repairs it at start"
            ),
            "{text}"
        );
        assert!(text.starts_with("intact: 3 entries"), "{text}");

        // The same fragment ending in a newline is a damaged line: tampering, at that line.
        std::fs::write(&path, lines[..3].concat() + fragment + "\n").expect("write");
        let err = verify_file(&path, &[], None).expect_err("damaged line");
        assert!(matches!(err, CtlError::AuditInvalid { .. }), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn s3_audit_repaired_entry_is_shown_in_the_summary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let lines = chain(3, |seq| {
            if seq == 2 {
                (
                    permafrost_core::audit::AUDIT_REPAIRED,
                    serde_json::json!({"dropped_bytes": 41, "resumed_after_seq": 1}),
                )
            } else {
                refused(seq)
            }
        });
        std::fs::write(&path, lines.concat()).expect("write");
        let r = verify_file(&path, &[], None).expect("intact");
        let text = describe_report(&r, false, true);
        assert!(
            text.contains("repaired: entry #2 (ts 102) records that the writer cut off a torn tail of 41 bytes"),
            "{text}"
        );
        assert!(!text.contains("torn tail: "), "{text}");
    }
}
