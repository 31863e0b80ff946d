//! The audit log writer shared by the node and the coordinator: appends one
//! hash-chained JSON line per event and fsyncs it before returning (L2), and
//! writes a signed checkpoint every few entries. Format and verification live
//! in `permafrost_core::audit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use permafrost_core::audit::{checkpoint_message, genesis, AuditEntry, CHECKPOINT};

/// Entries between signed checkpoints.
pub const CHECKPOINT_EVERY: u64 = 16;

/// Signs checkpoints with the writer's identity key.
pub type CheckpointSigner = Box<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

struct Head {
    seq: u64,
    hash: String,
    since_checkpoint: u64,
}

/// An append-only, fail-closed audit log.
pub struct AuditLog {
    path: PathBuf,
    actor: String,
    key_hex: String,
    sign: CheckpointSigner,
    head: Mutex<Head>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, recovering the chain head from
    /// the last entry. A damaged last line is an error: the node will not
    /// extend a chain it cannot read.
    pub fn open(
        path: &Path,
        actor: &str,
        key_hex: String,
        sign: CheckpointSigner,
    ) -> Result<Self, String> {
        let mut head = Head {
            seq: 0,
            hash: genesis(),
            since_checkpoint: 0,
        };
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("audit log {}: {e}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let e: AuditEntry = serde_json::from_str(line).map_err(|err| {
                    format!(
                        "audit log {} line {} unreadable: {err}",
                        path.display(),
                        i + 1
                    )
                })?;
                head.since_checkpoint = if e.event == CHECKPOINT {
                    0
                } else {
                    head.since_checkpoint + 1
                };
                head.seq = e.seq;
                head.hash = e.hash;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            actor: actor.to_string(),
            key_hex,
            sign,
            head: Mutex::new(head),
        })
    }

    fn write_line(&self, entry: &AuditEntry) -> Result<(), String> {
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
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("audit log {} write failed: {e}", self.path.display()))
    }

    /// Appends an event durably; returns only after fsync. Callers that
    /// release a share must refuse if this fails.
    pub fn append(&self, event: &str, detail: serde_json::Value) -> Result<(), String> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| "audit lock poisoned".to_string())?;
        let entry = AuditEntry::new(
            head.seq + 1,
            crate::unix_now(),
            &self.actor,
            event,
            detail,
            &head.hash,
        );
        self.write_line(&entry)?;
        head.seq = entry.seq;
        head.hash = entry.hash;
        head.since_checkpoint += 1;
        if head.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint_locked(&mut head)?;
        }
        Ok(())
    }

    /// Writes a signed checkpoint now (also done every [`CHECKPOINT_EVERY`] entries).
    pub fn checkpoint(&self) -> Result<(), String> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| "audit lock poisoned".to_string())?;
        self.checkpoint_locked(&mut head)
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
        self.write_line(&entry)?;
        head.seq = entry.seq;
        head.hash = entry.hash;
        head.since_checkpoint = 0;
        Ok(())
    }

    /// `(entries, head hash)`.
    pub fn head(&self) -> (u64, String) {
        self.head
            .lock()
            .map(|h| (h.seq, h.hash.clone()))
            .unwrap_or((0, genesis()))
    }
}
