//! The audit log writer shared by the node and the coordinator: appends one
//! hash-chained JSON line per event and fsyncs it before returning (L2), and
//! writes a signed checkpoint every few entries. A failed write is cut back to
//! the last whole entry, and a torn tail left by a crash is cut off at open
//! (S3). Format and verification live in `permafrost_core::audit`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ProtoError;
use permafrost_core::audit::{
    checkpoint_message, genesis, verify_bytes, AuditEntry, TornTail, AUDIT_REPAIRED, CHECKPOINT,
};

/// Entries between signed checkpoints.
pub const CHECKPOINT_EVERY: u64 = 16;

/// Signs checkpoints with the writer's identity key.
pub type CheckpointSigner = Box<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

struct Head {
    seq: u64,
    hash: String,
    since_checkpoint: u64,
    /// Set when a failed write could not be cut back: the file may end in a
    /// partial entry, so nothing more is appended until the log is reopened
    /// (which repairs it). Fail closed, L2.
    closed: Option<String>,
    /// The last append failed (and when): the daemon reports itself unhealthy
    /// until an append succeeds again.
    failing: Option<(String, std::time::Instant)>,
    /// Appends and checkpoints that failed since the log was opened, and
    /// the Unix time of the last one (for metrics).
    failures: AuditFailures,
    /// Entries were written by [`AuditLog::append_deferred`] and not fsynced yet.
    unsynced: bool,
}

/// Failed writes of an [`AuditLog`] since it was opened, as metrics show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditFailures {
    /// Appends and checkpoints that failed.
    pub total: u64,
    /// Unix time of the last failure; 0 if none.
    pub last_at: u64,
    /// Whether the log refuses records now (the last write failed, or it is closed).
    pub failing: bool,
}

/// The two file operations an append depends on, as plain functions so the
/// tests can make them fail the way a full disk does (S3).
#[derive(Clone, Copy)]
struct FileOps {
    /// Writes one whole line and fsyncs it (L2: durable before returning).
    write: fn(&mut File, &[u8]) -> std::io::Result<()>,
    /// Cuts the file back to `len` bytes and fsyncs the new length.
    truncate: fn(&File, u64) -> std::io::Result<()>,
}

const DISK: FileOps = FileOps {
    write: write_synced,
    truncate: truncate_synced,
};

fn write_synced(f: &mut File, line: &[u8]) -> std::io::Result<()> {
    f.write_all(line)?;
    f.sync_data()
}

fn truncate_synced(f: &File, len: u64) -> std::io::Result<()> {
    f.set_len(len)?;
    f.sync_all()
}

/// An append-only, fail-closed audit log.
pub struct AuditLog {
    path: PathBuf,
    actor: String,
    key_hex: String,
    sign: CheckpointSigner,
    head: Mutex<Head>,
    io: FileOps,
    repaired: Option<TornTail>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and verifies its whole chain,
    /// recovering the head from the last entry.
    ///
    /// A torn tail (an append interrupted by a full disk or a crash, S3) is
    /// cut off, fsynced, and recorded by an `audit_repaired` entry; see
    /// [`AuditLog::repaired`]. Anything else that does not verify — a damaged
    /// line that ends in a newline, a broken chain, a bad checkpoint — is an
    /// error: the writer will not extend a chain that may have been tampered with.
    pub fn open(
        path: &Path,
        actor: &str,
        key_hex: String,
        sign: CheckpointSigner,
    ) -> Result<Self, ProtoError> {
        Self::open_with(path, actor, key_hex, sign, DISK)
    }

    fn open_with(
        path: &Path,
        actor: &str,
        key_hex: String,
        sign: CheckpointSigner,
        io: FileOps,
    ) -> Result<Self, ProtoError> {
        let bytes = if path.is_file() {
            std::fs::read(path).map_err(|e| ProtoError::File {
                what: "audit log",
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        } else {
            Vec::new()
        };
        let report = verify_bytes(&bytes, &[], None).map_err(|reason| {
            ProtoError::AuditDamaged(format!(
                "audit log {} does not verify, refusing to extend it: {reason} \
                 (check it with `permafrostctl audit verify`)",
                path.display()
            ))
        })?;
        let mut log = Self {
            path: path.to_path_buf(),
            actor: actor.to_string(),
            key_hex,
            sign,
            head: Mutex::new(Head {
                seq: report.entries,
                hash: report.head,
                since_checkpoint: report.unsigned_tail,
                closed: None,
                failing: None,
                failures: AuditFailures::default(),
                unsynced: false,
            }),
            io,
            repaired: None,
        };
        if let Some(torn) = report.torn_tail {
            log.cut_torn_tail(&torn, bytes.len() as u64)
                .map_err(ProtoError::AuditUnavailable)?;
            log.repaired = Some(torn);
        }
        Ok(log)
    }

    /// The torn tail this open cut off, if it found one.
    pub fn repaired(&self) -> Option<&TornTail> {
        self.repaired.as_ref()
    }

    /// Cuts `torn` off (the file must still be `file_len` bytes long, as
    /// verified) and appends the `audit_repaired` entry that records it.
    fn cut_torn_tail(&self, torn: &TornTail, file_len: u64) -> Result<(), String> {
        let (seq, hash) = self.head();
        // Logged before the cut, so the evidence survives even if the
        // `audit_repaired` append below fails.
        tracing::warn!(
            path = %self.path.display(),
            dropped_bytes = torn.len,
            dropped_sha256 = %torn.sha256,
            resumed_after_seq = seq,
            resumed_after_hash = %hash,
            "audit log ends in a torn entry (an interrupted write); cutting it off"
        );
        let failed = |e: std::io::Error| {
            format!(
                "audit log {}: cannot cut off the torn tail after entry #{seq}: {e}",
                self.path.display()
            )
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(failed)?;
        let len = f.metadata().map_err(failed)?.len();
        if len != file_len {
            return Err(format!(
                "audit log {} changed while it was being opened ({file_len} bytes, now {len})",
                self.path.display()
            ));
        }
        (self.io.truncate)(&f, torn.offset).map_err(failed)?;
        drop(f);
        self.append(
            AUDIT_REPAIRED,
            serde_json::json!({
                "dropped_bytes": torn.len,
                "dropped_sha256": torn.sha256,
                "resumed_after_seq": seq,
                "resumed_after_hash": hash,
            }),
        )
        .map_err(|e| e.to_string())
    }

    /// Appends `entry` as one line. On failure the file is cut back to its
    /// length before the attempt, so it still ends with the last whole entry
    /// and the next append starts a fresh line (S3); if even that fails the
    /// log closes to appends until reopened.
    fn write_line(&self, head: &mut Head, entry: &AuditEntry, sync: bool) -> Result<(), String> {
        if let Some(why) = &head.closed {
            return Err(format!(
                "audit log {} refuses appends until reopened: {why}",
                self.path.display()
            ));
        }
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        // Reopened per entry so a vanished or replaced file is noticed at once.
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&self.path)
            .map_err(|e| format!("audit log {} unavailable: {e}", self.path.display()))?;
        // Where this entry starts; nothing has been written yet if this fails.
        let before = f
            .metadata()
            .map_err(|e| format!("audit log {} unavailable: {e}", self.path.display()))?
            .len();
        let written = if sync {
            (self.io.write)(&mut f, &line)
        } else {
            f.write_all(&line)
        };
        let Err(e) = written else {
            // An fsync covers every entry written before it.
            head.unsynced = !sync;
            return Ok(());
        };
        match (self.io.truncate)(&f, before) {
            Ok(()) => Err(format!(
                "audit log {} write failed: {e} (the partial entry was cut off; the log still ends at entry #{})",
                self.path.display(),
                head.seq
            )),
            Err(cut) => {
                let why = format!(
                    "a failed write ({e}) may have left a partial entry after entry #{} \
                     that could not be cut off ({cut}); reopening repairs it",
                    head.seq
                );
                tracing::error!(path = %self.path.display(), "audit log closed to appends: {why}");
                head.closed = Some(why.clone());
                Err(format!(
                    "audit log {} write failed and the log refuses appends until reopened: {why}",
                    self.path.display()
                ))
            }
        }
    }

    /// Whether the log takes records. After a failed append this retries
    /// (at most every few seconds) with an `audit_writable_again` entry, so a
    /// freed disk is noticed without waiting for traffic the daemon now refuses.
    pub fn health(&self) -> Result<(), ProtoError> {
        let why = {
            let head = self
                .head
                .lock()
                .map_err(|_| ProtoError::AuditUnavailable("audit lock poisoned".into()))?;
            if let Some(why) = &head.closed {
                return Err(ProtoError::AuditUnavailable(format!(
                    "audit log refuses appends until reopened: {why}"
                )));
            }
            match &head.failing {
                None => return Ok(()),
                Some((why, at)) if at.elapsed() < std::time::Duration::from_secs(3) => {
                    return Err(ProtoError::AuditUnavailable(why.clone()))
                }
                Some((why, _)) => why.clone(),
            }
        };
        self.append("audit_writable_again", serde_json::json!({"after": why}))
    }

    /// Appends an event durably; returns only after fsync. Callers that
    /// release a share must refuse if this fails.
    pub fn append(&self, event: &str, detail: serde_json::Value) -> Result<(), ProtoError> {
        self.append_with(event, detail, true)
    }

    /// Appends an event without waiting for its fsync: it is durable after
    /// the next [`AuditLog::sync`] or durable append. Only for records no
    /// share depends on (the coordinator's, which fsyncs them before any
    /// store commit is durable); a node's share records always use
    /// [`AuditLog::append`].
    pub fn append_deferred(
        &self,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), ProtoError> {
        self.append_with(event, detail, false)
    }

    /// Makes every entry appended so far durable (nothing to do if they are).
    pub fn sync(&self) -> Result<(), ProtoError> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| ProtoError::AuditUnavailable("audit lock poisoned".into()))?;
        if !head.unsynced {
            return Ok(());
        }
        let synced = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|f| f.sync_data());
        match synced {
            Ok(()) => {
                head.unsynced = false;
                Ok(())
            }
            Err(e) => {
                let why = format!("audit log {} fsync failed: {e}", self.path.display());
                head.failures.total += 1;
                head.failures.last_at = crate::unix_now();
                head.failing = Some((why.clone(), std::time::Instant::now()));
                Err(ProtoError::AuditUnavailable(why))
            }
        }
    }

    fn append_with(
        &self,
        event: &str,
        detail: serde_json::Value,
        sync: bool,
    ) -> Result<(), ProtoError> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| ProtoError::AuditUnavailable("audit lock poisoned".into()))?;
        let result = self.append_locked(&mut head, event, detail, sync);
        head.failing = match &result {
            Ok(()) => None,
            Err(e) => {
                head.failures.total += 1;
                head.failures.last_at = crate::unix_now();
                Some((e.clone(), std::time::Instant::now()))
            }
        };
        result.map_err(ProtoError::AuditUnavailable)
    }

    fn append_locked(
        &self,
        head: &mut Head,
        event: &str,
        detail: serde_json::Value,
        sync: bool,
    ) -> Result<(), String> {
        let entry = AuditEntry::new(
            head.seq + 1,
            crate::unix_now(),
            &self.actor,
            event,
            detail,
            &head.hash,
        );
        self.write_line(head, &entry, sync)?;
        head.seq = entry.seq;
        head.hash = entry.hash;
        head.since_checkpoint += 1;
        if head.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint_locked(head)?;
        }
        Ok(())
    }

    /// Writes a signed checkpoint now (also done every [`CHECKPOINT_EVERY`] entries).
    pub fn checkpoint(&self) -> Result<(), ProtoError> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| ProtoError::AuditUnavailable("audit lock poisoned".into()))?;
        let result = self.checkpoint_locked(&mut head);
        if result.is_err() {
            head.failures.total += 1;
            head.failures.last_at = crate::unix_now();
        }
        result.map_err(ProtoError::AuditUnavailable)
    }

    fn checkpoint_locked(&self, head: &mut Head) -> Result<(), String> {
        let seq = head.seq + 1;
        let signature = (self.sign)(&checkpoint_message(seq, &head.hash));
        let detail = serde_json::json!({"key": self.key_hex, "signature": hex::encode(signature)});
        let entry = AuditEntry::new(
            seq,
            crate::unix_now(),
            &self.actor,
            CHECKPOINT,
            detail,
            &head.hash,
        );
        self.write_line(head, &entry, true)?;
        head.seq = entry.seq;
        head.hash = entry.hash;
        head.since_checkpoint = 0;
        Ok(())
    }

    /// Failed writes so far; unlike [`AuditLog::health`], never writes.
    pub fn failures(&self) -> AuditFailures {
        self.head
            .lock()
            .map(|h| AuditFailures {
                failing: h.closed.is_some() || h.failing.is_some(),
                ..h.failures
            })
            .unwrap_or(AuditFailures {
                failing: true,
                ..AuditFailures::default()
            })
    }

    /// `(entries, head hash)`.
    pub fn head(&self) -> (u64, String) {
        self.head
            .lock()
            .map(|h| (h.seq, h.hash.clone()))
            .unwrap_or((0, genesis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use permafrost_core::identity::NodeIdentity;

    /// A scratch directory removed on drop (proto has no `tempfile`).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "permafrost-audit-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }

        fn log(&self) -> PathBuf {
            self.0.join("audit.log")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn identity() -> NodeIdentity {
        NodeIdentity::from_secret_bytes(&[7u8; 64]).expect("identity")
    }

    fn open_with(path: &Path, io: FileOps) -> Result<AuditLog, ProtoError> {
        let id = identity();
        AuditLog::open_with(
            path,
            "n1",
            hex::encode(id.identity_key().as_bytes()),
            Box::new(move |msg| id.sign(msg)),
            io,
        )
    }

    fn open(path: &Path) -> Result<AuditLog, ProtoError> {
        open_with(path, DISK)
    }

    fn append_n(log: &AuditLog, n: u64) {
        for i in 0..n {
            log.append(
                "share_released",
                serde_json::json!({"request": format!("wd-{i}")}),
            )
            .expect("append");
        }
    }

    /// Verifies the file with core's verifier, against the writer's key and head.
    fn verify_file(path: &Path, log: &AuditLog) -> permafrost_core::audit::VerifyReport {
        let bytes = std::fs::read(path).expect("read");
        let (entries, hash) = log.head();
        verify_bytes(&bytes, &[identity().identity_key()], Some((entries, &hash)))
            .expect("log verifies")
    }

    fn entries(path: &Path) -> Vec<AuditEntry> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("entry"))
            .collect()
    }

    /// A full disk: half the line reaches the file, then ENOSPC.
    fn half_then_enospc(f: &mut File, line: &[u8]) -> std::io::Result<()> {
        f.write_all(&line[..line.len() / 2])?;
        Err(std::io::Error::from_raw_os_error(28))
    }

    /// The whole line is written but fsync reports an I/O error.
    fn fsync_fails(f: &mut File, line: &[u8]) -> std::io::Result<()> {
        f.write_all(line)?;
        Err(std::io::Error::other("fsync: input/output error"))
    }

    fn truncate_fails(_: &File, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only file system"))
    }

    #[test]
    fn s3_failed_write_is_cut_back_and_next_append_chains() {
        for (what, write) in [
            ("enospc", half_then_enospc as fn(&mut File, &[u8]) -> _),
            ("fsync", fsync_fails),
        ] {
            let dir = Scratch::new(what);
            let mut log = open(&dir.log()).expect("open");
            append_n(&log, 20); // crosses a checkpoint
            let before = std::fs::read(dir.log()).expect("read");
            let head = log.head();

            log.io = FileOps {
                write,
                truncate: truncate_synced,
            };
            let err = log
                .append("share_released", serde_json::json!({"request": "wd-x"}))
                .expect_err("the write fails")
                .to_string();
            assert!(
                err.contains("write failed") && err.contains("still ends at entry #21"),
                "{what}: {err}"
            );
            assert_eq!(std::fs::read(dir.log()).expect("read"), before, "{what}");
            assert_eq!(log.head(), head, "{what}");
            // Metrics see the failure, without a write of their own.
            let failed = log.failures();
            assert!(
                failed.failing && failed.total == 1 && failed.last_at > 0,
                "{failed:?}"
            );
            assert_eq!(log.head(), head, "{what}");

            // The disk has room again: the next entry starts a fresh line and chains.
            log.io = DISK;
            log.append("share_released", serde_json::json!({"request": "wd-y"}))
                .expect("append after the failure");
            let recovered = log.failures();
            assert!(!recovered.failing && recovered.total == 1, "{recovered:?}");
            let r = verify_file(&dir.log(), &log);
            assert_eq!((r.entries, r.torn_tail), (22, None), "{what}");
            let last = entries(&dir.log()).pop().expect("entry");
            assert_eq!((last.seq, last.prev), (22, head.1), "{what}");
            // And a restart finds nothing to repair.
            assert!(open(&dir.log()).expect("reopen").repaired().is_none());
        }
    }

    #[test]
    fn s3_failure_that_cannot_be_cut_back_closes_the_log_until_reopened() {
        let dir = Scratch::new("closed");
        let mut log = open(&dir.log()).expect("open");
        append_n(&log, 3);
        log.io = FileOps {
            write: half_then_enospc,
            truncate: truncate_fails,
        };
        let err = log
            .append("share_released", serde_json::json!({"request": "wd-x"}))
            .expect_err("the write fails")
            .to_string();
        assert!(err.contains("refuses appends until reopened"), "{err}");
        assert!(err.contains("read-only file system"), "{err}");
        // Even with the disk healthy again, no append until reopened (L2).
        log.io = DISK;
        let err = log
            .append("share_released", serde_json::json!({"request": "wd-y"}))
            .expect_err("fail closed")
            .to_string();
        assert!(err.contains("refuses appends until reopened"), "{err}");
        let err = log.checkpoint().expect_err("fail closed").to_string();
        assert!(err.contains("refuses appends until reopened"), "{err}");
        assert_eq!(log.head().0, 3);

        // Reopening repairs the partial entry the failed write left.
        let log = open(&dir.log()).expect("reopen repairs");
        let torn = log.repaired().expect("repaired").clone();
        assert_eq!(torn.after_seq, 3);
        log.append("share_released", serde_json::json!({"request": "wd-z"}))
            .expect("append");
        let r = verify_file(&dir.log(), &log);
        assert_eq!((r.entries, r.repairs.len(), r.torn_tail), (5, 1, None));
    }

    /// A real full device: `/dev/full` fails every write with ENOSPC, and a
    /// character device cannot be truncated, so the log must close.
    #[cfg(target_os = "linux")]
    #[test]
    fn s3_real_enospc_without_cut_back_fails_closed() {
        let path = Path::new("/dev/full");
        if std::fs::OpenOptions::new().append(true).open(path).is_err() {
            eprintln!("no writable /dev/full here; nothing to test");
            return;
        }
        let log = open(path).expect("open");
        let err = log
            .append("share_released", serde_json::json!({}))
            .expect_err("disk full")
            .to_string();
        assert!(err.contains("refuses appends until reopened"), "{err}");
        let err = log
            .append("share_released", serde_json::json!({}))
            .expect_err("still closed")
            .to_string();
        assert!(err.contains("refuses appends until reopened"), "{err}");
        assert_eq!(log.head(), (0, genesis()));
    }

    #[test]
    fn s3_open_repairs_a_torn_last_line() {
        let dir = Scratch::new("torn");
        let log = open(&dir.log()).expect("open");
        append_n(&log, 18);
        let (seq, hash) = log.head();
        drop(log);
        let whole = std::fs::read(dir.log()).expect("read");
        // What a crash or a full disk leaves: the start of the next entry, no newline.
        let fragment = br#"{"seq":20,"ts":1767225600,"actor":"n1","event":"share_rel"#;
        let mut torn = whole.clone();
        torn.extend_from_slice(fragment);
        std::fs::write(dir.log(), &torn).expect("write");

        let log = open(&dir.log()).expect("open repairs");
        let repaired = log.repaired().expect("a repair").clone();
        assert_eq!(
            (repaired.after_seq, repaired.offset, repaired.len),
            (seq, whole.len() as u64, fragment.len() as u64)
        );
        let all = entries(&dir.log());
        let last = all.last().expect("entry");
        assert_eq!(
            (last.seq, last.event.as_str(), &last.prev),
            (seq + 1, AUDIT_REPAIRED, &hash)
        );
        assert_eq!(
            last.detail,
            serde_json::json!({
                "dropped_bytes": fragment.len(),
                "dropped_sha256": repaired.sha256,
                "resumed_after_seq": seq,
                "resumed_after_hash": hash,
            })
        );
        assert!(!serde_json::to_string(last)
            .expect("json")
            .contains("share_rel\""));

        // The chain goes on from the repair; the whole file verifies.
        append_n(&log, 2);
        let r = verify_file(&dir.log(), &log);
        assert_eq!((r.entries, r.torn_tail), (seq + 3, None));
        assert_eq!(r.repairs.len(), 1);
        assert_eq!(r.repairs[0].seq, seq + 1);
        assert!(r.checkpoints >= 1);
        assert!(open(&dir.log()).expect("reopen").repaired().is_none());
    }

    #[test]
    fn s3_open_refuses_a_damaged_whole_line_or_a_broken_chain() {
        let dir = Scratch::new("damaged");
        let log = open(&dir.log()).expect("open");
        append_n(&log, 5);
        drop(log);
        let whole = std::fs::read_to_string(dir.log()).expect("read");

        // Newline-terminated garbage is not an interrupted write.
        let damaged = format!("{whole}{{\"seq\":6,\"ts\":17\n");
        std::fs::write(dir.log(), &damaged).expect("write");
        let err = open(&dir.log()).expect_err("refused").to_string();
        assert!(
            err.contains("does not verify") && err.contains("line 6"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(dir.log()).expect("read"), damaged);
        let err = verify_bytes(damaged.as_bytes(), &[], None)
            .expect_err("tampering")
            .to_string();
        assert!(err.starts_with("line 6: not an audit entry"), "{err}");

        // The old writer's damage: a fragment with the next entry appended onto it.
        let lines: Vec<&str> = whole.lines().collect();
        let glued = format!(
            "{}\n{}{}\n",
            lines[..4].join("\n"),
            &lines[4][..30],
            lines[4]
        );
        std::fs::write(dir.log(), &glued).expect("write");
        let err = open(&dir.log()).expect_err("refused").to_string();
        assert!(err.contains("line 5"), "{err}");

        // Two whole entries swapped.
        let mut swapped: Vec<&str> = lines.clone();
        swapped.swap(1, 2);
        std::fs::write(dir.log(), swapped.join("\n") + "\n").expect("write");
        let err = open(&dir.log()).expect_err("refused").to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
