//! Process and file hygiene for a daemon that holds unsealed key shares (threats H1, H2):
//! no core dumps, no same-user debugger attaching, key memory kept out of swap where the OS
//! allows it, and a data directory nobody but its owner can enter.
//!
//! Every system call goes through `rustix`'s safe wrappers, so the crate keeps
//! `forbid(unsafe_code)`: there is no `unsafe` block here or anywhere else in the node.

use std::path::Path;

use crate::NodeError;

/// What [`harden_process`] achieved, for the start-up log and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` is 0, read back from the kernel: no core file is written on a crash
    /// and processes of the same user cannot ptrace this one or read its memory.
    pub non_dumpable: bool,
    /// Whether memory is locked against swap.
    pub memory: MemoryLock,
}

/// Whether the process's memory is locked in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every current and future page is locked once touched: unsealed shares never reach swap.
    Locked,
    /// Not locked; the text says why and what the operator can do about it.
    NotLocked(String),
}

/// Hardens the running process before it reads any secret. Called first thing in `main`.
///
/// - the file-creation mask becomes 0077, so every file the node writes (store, audit log)
///   is owner-only;
/// - `RLIMIT_CORE` is set to 0, soft and hard, so not even a child can raise it again;
/// - on Linux, `prctl(PR_SET_DUMPABLE, 0)`: no core dump through any `core_pattern`, and no
///   `ptrace` or `/proc/<pid>/mem` access by other processes of the same user;
/// - on Linux, all memory is locked against swap when the OS allows it; otherwise a warning
///   says that memory is not locked and how to allow it.
///
/// Fails (and the node must not start) only if core dumps cannot be disabled.
pub fn harden_process() -> Result<Hardening, NodeError> {
    let hardening = platform::harden()?;
    if hardening.non_dumpable {
        tracing::info!("process hardened: core dumps disabled, not dumpable, umask 0077");
    } else {
        tracing::warn!(
            "core file size limit is 0, but this OS has no PR_SET_DUMPABLE: the process is \
             still attachable by debuggers of the same user"
        );
    }
    match &hardening.memory {
        MemoryLock::Locked => tracing::info!("memory locked: key material is never swapped out"),
        MemoryLock::NotLocked(reason) => {
            tracing::warn!(%reason, "memory is NOT locked: unsealed key shares may be written to swap")
        }
    }
    Ok(hardening)
}

/// Refuses a data directory that group or other users can enter, naming the path and mode:
/// sealed blobs are ciphertext, but the store also reveals which key groups exist, and a
/// writable directory lets another user swap the sealer state or the store.
pub fn check_data_dir(path: &Path) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| NodeError::Config(format!("data_dir = {}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(NodeError::Config(format!(
                "data_dir = {}: mode {:04o} lets group or other users in; it must be 0700 \
                 (chmod 700 {})",
                path.display(),
                mode & 0o7777,
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Makes everything under `root` owner-only: directories 0700, files 0600. Symbolic links are
/// not followed (a link planted in the data dir must not redirect a chmod elsewhere).
pub fn restrict_tree(root: &Path) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let failed = |p: &Path, e: std::io::Error| {
            NodeError::Config(format!("data_dir: {}: {e}", p.display()))
        };
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path).map_err(|e| failed(&path, e))?;
            let mode = if meta.is_dir() {
                for entry in std::fs::read_dir(&path).map_err(|e| failed(&path, e))? {
                    pending.push(entry.map_err(|e| failed(&path, e))?.path());
                }
                0o700
            } else if meta.is_file() {
                0o600
            } else {
                continue;
            };
            if meta.permissions().mode() & 0o7777 != mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| failed(&path, e))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = root;
    Ok(())
}

#[cfg(target_os = "linux")]
mod platform {
    use rustix::mm::{mlockall, MlockAllFlags};
    use rustix::process::{
        dumpable_behavior, getrlimit, set_dumpable_behavior, setrlimit, DumpableBehavior, Resource,
        Rlimit,
    };
    use rustix::thread::{capabilities, CapabilitySet};

    use super::{Hardening, LockPlan, MemoryLock};
    use crate::NodeError;

    pub(super) fn harden() -> Result<Hardening, NodeError> {
        super::restrict_umask();
        super::disable_core_files()?;
        set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| {
            NodeError::Unavailable(format!(
                "cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {e}"
            ))
        })?;
        // Read back: a kernel that silently ignored the call must not pass for a hardened one.
        let non_dumpable = matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable));
        if !non_dumpable {
            return Err(NodeError::Unavailable(
                "prctl(PR_SET_DUMPABLE, 0) did not take effect; refusing to hold key shares in a dumpable process".into(),
            ));
        }
        Ok(Hardening {
            non_dumpable,
            memory: lock_memory(),
        })
    }

    /// Locks all memory (`MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT`) when [`super::plan_memory_lock`]
    /// says it is safe. `MCL_ONFAULT` locks pages as they are touched rather than populating
    /// every mapping (thread stacks, sled's cache) up front.
    fn lock_memory() -> MemoryLock {
        let can_lock_unlimited =
            capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::IPC_LOCK));
        let limit = getrlimit(Resource::Memlock);
        match super::plan_memory_lock(can_lock_unlimited, limit.current, limit.maximum) {
            LockPlan::Lock => {}
            LockPlan::RaiseLimitThenLock => {
                let unlimited = Rlimit {
                    current: None,
                    maximum: None,
                };
                if let Err(e) = setrlimit(Resource::Memlock, unlimited) {
                    return MemoryLock::NotLocked(format!(
                        "cannot raise RLIMIT_MEMLOCK to unlimited: {e}"
                    ));
                }
            }
            LockPlan::DoNotLock(reason) => return MemoryLock::NotLocked(reason),
        }
        let all = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
        match mlockall(all | MlockAllFlags::ONFAULT) {
            Ok(()) => MemoryLock::Locked,
            // Kernels before 4.4 do not know MCL_ONFAULT.
            Err(rustix::io::Errno::INVAL) => match mlockall(all) {
                Ok(()) => MemoryLock::Locked,
                Err(e) => MemoryLock::NotLocked(format!("mlockall: {e}")),
            },
            Err(e) => MemoryLock::NotLocked(format!("mlockall: {e}")),
        }
    }
}

/// What to do about memory locking, from the process's privilege and `RLIMIT_MEMLOCK`
/// (`None` = unlimited).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum LockPlan {
    Lock,
    RaiseLimitThenLock,
    DoNotLock(String),
}

/// `MCL_FUTURE` under a finite limit would turn every allocation past the limit into an
/// out-of-memory abort, possibly mid-signing; so lock only when the amount is unbounded.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn plan_memory_lock(can_lock_unlimited: bool, soft: Option<u64>, hard: Option<u64>) -> LockPlan {
    match (can_lock_unlimited, soft, hard) {
        (true, _, _) | (false, None, _) => LockPlan::Lock,
        (false, Some(_), None) => LockPlan::RaiseLimitThenLock,
        (false, Some(bytes), Some(_)) => LockPlan::DoNotLock(format!(
            "RLIMIT_MEMLOCK is {} KiB and the process lacks CAP_IPC_LOCK; allow unlimited locked memory \
             (systemd LimitMEMLOCK=infinity, `ulimit -l unlimited`, or CAP_IPC_LOCK)",
            bytes / 1024
        )),
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod platform {
    use super::{Hardening, MemoryLock};
    use crate::NodeError;

    pub(super) fn harden() -> Result<Hardening, NodeError> {
        super::restrict_umask();
        super::disable_core_files()?;
        Ok(Hardening {
            non_dumpable: false,
            memory: MemoryLock::NotLocked("memory locking is implemented for Linux only".into()),
        })
    }
}

#[cfg(not(unix))]
mod platform {
    use crate::NodeError;

    pub(super) fn harden() -> Result<super::Hardening, NodeError> {
        Err(NodeError::Unavailable(
            "cannot disable core dumps on this OS; the node runs on Linux (or another Unix) only"
                .into(),
        ))
    }
}

#[cfg(unix)]
fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Soft and hard limit 0: an exploited process cannot raise it again to dump itself later.
#[cfg(unix)]
fn disable_core_files() -> Result<(), NodeError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, zero).map_err(|e| {
        NodeError::Unavailable(format!(
            "cannot disable core dumps (setrlimit RLIMIT_CORE 0): {e}"
        ))
    })?;
    if getrlimit(Resource::Core) != zero {
        return Err(NodeError::Unavailable(
            "RLIMIT_CORE is still non-zero after setting it to 0; refusing to hold key shares"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn h2_group_or_world_accessible_data_dir_is_refused_naming_path_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [0o750, 0o705, 0o755, 0o777, 0o710] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(bad))
                .expect("chmod");
            let msg = check_data_dir(dir.path()).expect_err("refused").to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        check_data_dir(dir.path()).expect("0700 is accepted");
    }

    #[test]
    fn h2_memory_is_locked_only_when_the_amount_is_unbounded() {
        assert_eq!(
            plan_memory_lock(true, Some(8 << 20), Some(8 << 20)),
            LockPlan::Lock
        );
        assert_eq!(plan_memory_lock(false, None, None), LockPlan::Lock);
        assert_eq!(
            plan_memory_lock(false, Some(8 << 20), None),
            LockPlan::RaiseLimitThenLock
        );
        let LockPlan::DoNotLock(reason) = plan_memory_lock(false, Some(8 << 20), Some(64 << 20))
        else {
            panic!("a finite hard limit without CAP_IPC_LOCK must not lock");
        };
        assert!(
            reason.contains("8192 KiB") && reason.contains("LimitMEMLOCK=infinity"),
            "{reason}"
        );
    }

    #[test]
    fn missing_data_dir_is_named() {
        let msg = check_data_dir(Path::new("/nonexistent/permafrost-data"))
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("/nonexistent/permafrost-data"), "{msg}");
    }

    #[test]
    fn h2_restrict_tree_makes_files_0600_and_dirs_0700_without_following_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("elsewhere");
        std::fs::write(&target, b"x").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let sub = dir.path().join("store/blobs");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("db"), b"sealed").expect("write");
        std::fs::write(dir.path().join("sealer.json"), b"{}").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).expect("symlink");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        restrict_tree(dir.path()).expect("restrict");
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("store")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("db")), 0o600);
        assert_eq!(mode(&dir.path().join("sealer.json")), 0o600);
        assert_eq!(
            mode(&target),
            0o644,
            "the link's target outside the tree is untouched"
        );
    }
}
