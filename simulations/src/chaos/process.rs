//! Process control for chaos runs: `kill -9` of a daemon by process id, and
//! the `permafrost-liar` child process with its event stream and `resume` command.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::chaos::liar::LiarEvent;
use crate::daemons::log_tail;
use crate::SimError;

/// Sends SIGKILL to `pid` (`kill -KILL`): no shutdown hook runs, memory is simply gone.
pub fn kill9(name: &str, pid: u32) -> Result<(), SimError> {
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| SimError::Setup(format!("cannot run kill for {name} (pid {pid}): {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(SimError::Setup(format!(
            "kill -KILL {pid} ({name}) failed: {status}; was it already gone?"
        )))
    }
}

/// A running `permafrost-liar`. Dropping it kills the process.
#[derive(Debug)]
pub struct LiarProcess {
    node: String,
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<LiarEvent>,
    seen: Vec<LiarEvent>,
    /// Events before this index were already returned by [`LiarProcess::wait_for`].
    matched: usize,
}

impl LiarProcess {
    /// Starts `program args...` for `node`, stderr appended to `log`, and waits for it to listen.
    pub async fn spawn(
        program: &Path,
        args: Vec<OsString>,
        node: &str,
        log: &Path,
    ) -> Result<Self, SimError> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| SimError::io(log, e))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SimError::Setup(format!(
                    "cannot start the liar for {node} ({}): {e}",
                    program.display()
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SimError::Setup("liar stdout not captured".into()))?;
        let stdin = child.stdin.take();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str::<LiarEvent>(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        let mut liar = Self {
            node: node.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: log.to_path_buf(),
            child,
            stdin,
            events,
            seen: Vec::new(),
            matched: 0,
        };
        let listening = liar
            .wait_for("listening", Duration::from_secs(15), |e| {
                matches!(e, LiarEvent::Listening { .. })
            })
            .await?;
        if let LiarEvent::Listening { addr } = listening {
            liar.addr = addr.parse().map_err(|e| {
                SimError::Setup(format!("liar for {node} reports address {addr:?}: {e}"))
            })?;
        }
        Ok(liar)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node it fronts.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Every event so far.
    pub fn events(&mut self) -> &[LiarEvent] {
        self.drain();
        &self.seen
    }

    /// Waits for the next event (after the last one matched) that satisfies `wanted`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&LiarEvent) -> bool,
    ) -> Result<LiarEvent, SimError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen[self.matched..].iter().position(&wanted) {
                let index = self.matched + i;
                self.matched = index + 1;
                return Ok(self.seen[index].clone());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.seen.push(event),
                Ok(None) => {
                    return Err(SimError::Setup(format!(
                        "the liar for {} exited while waiting for {what}; {}:\n{}",
                        self.node,
                        self.log.display(),
                        log_tail(&self.log, 10)
                    )))
                }
                Err(_) => {
                    return Err(SimError::Timeout(format!(
                        "the liar for {} reported no {what} within {timeout:?}",
                        self.node
                    )))
                }
            }
        }
    }

    /// Releases a held round 2.
    pub async fn resume(&mut self) -> Result<(), SimError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| SimError::Setup(format!("the liar for {} is stopping", self.node)))?;
        stdin
            .write_all(b"resume\n")
            .await
            .and(stdin.flush().await)
            .map_err(|e| SimError::Setup(format!("cannot command the liar for {}: {e}", self.node)))
    }

    /// Stops it (stdin closed, then SIGKILL after a grace period) and returns every event it reported.
    pub async fn stop(mut self) -> Vec<LiarEvent> {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        // The reader task ends with the process; collect what it still had.
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), self.events.recv()).await
        {
            self.seen.push(e);
        }
        std::mem::take(&mut self.seen)
    }
}
