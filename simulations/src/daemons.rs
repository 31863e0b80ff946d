//! Child daemon processes of a local cluster, stopped whatever happens.
//!
//! [`Daemons`] owns every child it spawns and stops them in its `Drop`, so the
//! cluster goes away on success, on an error, on Ctrl-C (the future holding it
//! is dropped) and on a panic (drop runs while unwinding).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::SimError;

/// How long daemons get to exit after SIGTERM before they are killed.
const GRACE: Duration = Duration::from_secs(5);

/// One running child.
#[derive(Debug)]
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

/// Every daemon of a local cluster; stops them all when dropped.
#[derive(Debug, Default)]
pub struct Daemons {
    list: Vec<Daemon>,
}

impl Daemons {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub fn spawn<I, S>(
        &mut self,
        name: &str,
        program: &Path,
        args: I,
        log: &Path,
    ) -> Result<u32, SimError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| SimError::io(log, e))?;
        let err = out.try_clone().map_err(|e| SimError::io(log, e))?;
        let child = Command::new(program)
            .args(args)
            // Logs go to files: no terminal colour codes in them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                SimError::Setup(format!("cannot start {name} ({}): {e}", program.display()))
            })?;
        let pid = child.id();
        self.list.push(Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exit: None,
        });
        Ok(pid)
    }

    /// Fails naming the first daemon that has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), SimError> {
        for d in &mut self.list {
            if let Some(status) = poll(d) {
                return Err(SimError::DaemonExited {
                    name: d.name.clone(),
                    status: status.to_string(),
                    log: d.log.clone(),
                    tail: log_tail(&d.log, 15),
                });
            }
        }
        Ok(())
    }

    /// Daemons that exited since the last call: (name, status, log file).
    pub fn newly_exited(&mut self) -> Vec<(String, ExitStatus, PathBuf)> {
        let mut out = Vec::new();
        for d in &mut self.list {
            let already = d.exit.is_some();
            if let Some(status) = poll(d) {
                if !already {
                    out.push((d.name.clone(), status, d.log.clone()));
                }
            }
        }
        out
    }

    /// Stops every daemon: SIGTERM in reverse start order (the coordinator
    /// before the nodes), then SIGKILL for any still running after the grace period.
    pub fn stop(&mut self) {
        for d in self.list.iter_mut().rev() {
            if poll(d).is_none() {
                let sent = Command::new("kill")
                    .arg("-TERM")
                    .arg(d.child.id().to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !sent {
                    let _ = d.child.kill();
                }
            }
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline && self.list.iter_mut().any(|d| poll(d).is_none()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for d in &mut self.list {
            if poll(d).is_none() {
                eprintln!(
                    "permafrost-sim: {} did not stop within {GRACE:?}; killing it",
                    d.name
                );
                let _ = d.child.kill();
                if let Ok(status) = d.child.wait() {
                    d.exit = Some(status);
                }
            }
        }
    }

    /// Number of daemons still running.
    pub fn running(&mut self) -> usize {
        self.list
            .iter_mut()
            .map(poll)
            .filter(Option::is_none)
            .count()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poll(d: &mut Daemon) -> Option<ExitStatus> {
    if d.exit.is_none() {
        if let Ok(Some(status)) = d.child.try_wait() {
            d.exit = Some(status);
        }
    }
    d.exit
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_stops_children_and_exit_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let mut d = Daemons::default();
        d.spawn("sleeper", Path::new("sleep"), ["30"], &log)
            .expect("spawn");
        d.spawn("quitter", Path::new("true"), Vec::<&str>::new(), &log)
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        let err = d.check_alive().expect_err("quitter exited");
        assert!(err.to_string().contains("quitter"), "{err}");
        assert_eq!(d.running(), 1);
        let started = Instant::now();
        drop(d);
        assert!(
            started.elapsed() < GRACE,
            "SIGTERM should stop sleep at once"
        );
    }

    #[test]
    fn a_panic_still_stops_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let (tx, rx) = std::sync::mpsc::channel();
        let result = std::panic::catch_unwind(move || {
            let mut d = Daemons::default();
            let pid = d
                .spawn("sleeper", Path::new("sleep"), ["30"], &log)
                .expect("spawn");
            tx.send(pid).expect("send");
            panic!("simulated failure while the cluster runs");
        });
        assert!(result.is_err());
        let pid = rx.recv().expect("pid");
        // `kill -0` fails once the process is gone (and reaped by the guard's wait).
        let alive = Command::new("kill")
            .arg("-0")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status()
            .expect("kill")
            .success();
        assert!(!alive, "child {pid} survived a panic");
    }
}
