//! The writer thread: drains the queue into one transaction per batch and
//! commits it once (group commit). Results are handed back only after the
//! commit, so "returned Ok" always means "durable" — except for a deferred
//! step, whose result comes with a [`Durable`] to wait on: a batch of only
//! deferred steps is committed without an fsync (visible to every reader at
//! once), and the next durable commit (a later batch, a [`Durable::wait`],
//! or the writer itself within [`DEFERRED_FLUSH`]) makes it durable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::txn::{definition, WriteTxn};
use crate::StoreError;

/// Most steps in one commit: bounds the time one commit holds the writer.
pub const MAX_BATCH: usize = 512;
/// Most steps waiting for the writer; beyond this writes are refused as busy.
pub const QUEUE_CAPACITY: usize = 8192;
/// A commit in progress longer than this makes the store unhealthy.
const STUCK_AFTER: Duration = Duration::from_secs(2);
pub(crate) const HEARTBEAT_TABLE: &str = "_heartbeat";
/// Memory redb may use to cache pages. Its default (1 GiB) lets a daemon's
/// RSS grow with the number of requests it has stored; this keeps it flat.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Longest a deferred step stays committed but not durable while the writer
/// is idle.
pub const DEFERRED_FLUSH: Duration = Duration::from_millis(20);

/// How every store file is opened.
pub(crate) fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

type Deliver = Box<dyn FnOnce(Result<(), StoreError>, u64) + Send>;

/// A step's result once its batch is committed, with the commit's number.
pub(crate) type Answer<R, E> = oneshot::Receiver<Result<(R, u64), E>>;

/// Runs on the writer thread before every durable commit; an error fails the
/// commit (every step in it is refused). The coordinator fsyncs its audit log
/// here, so no record is durable before the audit entries written ahead of it.
pub type BeforeDurable = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Commits so far, and how many of them are durable.
#[derive(Clone, Debug, Default)]
struct Progress {
    committed: u64,
    durable: u64,
    /// A durable commit failed while commits up to this one were not durable.
    failed: Option<(u64, String)>,
}

/// Told of every durable commit of at least one step: how long the batch
/// took (first step to durable commit) and how many steps it held. Runs on
/// the writer thread, so it must be quick (a metrics observation).
pub type CommitObserver = Arc<dyn Fn(Duration, u64) + Send + Sync>;

/// What running one step left: how to hand its result back, and whether its
/// writes could not be moved into the transaction (which then must abort).
struct Ran {
    deliver: Deliver,
    apply_failed: Option<StoreError>,
}

enum Job {
    /// A step, and whether its commit must be durable before it is answered.
    Step(Box<dyn FnOnce(&redb::WriteTransaction) -> Ran + Send>, bool),
    /// Make every commit so far durable.
    Sync,
    Stall(Duration),
}

/// Counters of the writer since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable commits of at least one step (idle heartbeats not counted).
    pub commits: u64,
    /// Steps committed (each caller's `write` is one).
    pub steps: u64,
    /// Largest batch committed at once.
    pub max_batch: u64,
    /// Commits that failed (every step in them was refused).
    pub failed_commits: u64,
    /// Steps refused because the queue was full.
    pub refused_busy: u64,
    /// Steps waiting now.
    pub queued: u64,
}

impl StoreStats {
    /// Mean steps per commit.
    pub fn mean_batch(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.steps as f64 / self.commits as f64
        }
    }
}

#[derive(Default)]
struct Status {
    stats: StoreStats,
    busy_since: Option<Instant>,
    last_error: Option<String>,
}

pub(crate) struct Core {
    /// The open database; `None` only while the writer reopens it after an I/O
    /// error (redb refuses every commit after one until it is reopened).
    db: std::sync::RwLock<Option<Arc<redb::Database>>>,
    path: std::path::PathBuf,
    status: Mutex<Status>,
    queued: AtomicUsize,
    observer: std::sync::RwLock<Option<CommitObserver>>,
    before_durable: std::sync::RwLock<Option<BeforeDurable>>,
    progress: tokio::sync::watch::Sender<Progress>,
}

impl Core {
    /// Runs the [`BeforeDurable`] hook, if any.
    fn before_durable_commit(&self) -> Result<(), StoreError> {
        let hook = self.before_durable.read().ok().and_then(|h| h.clone());
        match hook {
            Some(hook) => {
                hook().map_err(|e| StoreError::Engine(format!("before the durable commit: {e}")))
            }
            None => Ok(()),
        }
    }

    /// The database, for one transaction.
    pub(crate) fn db(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.db
            .read()
            .map_err(|_| StoreError::Engine("store lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError::Engine("store is being reopened after an I/O error".into()))
    }

    /// After a failed commit: closes and reopens the file, so a disk that has
    /// room again (or a transient I/O error) does not need a daemon restart.
    /// What was committed before is intact (redb commits are atomic).
    fn reopen(&self) -> Result<(), StoreError> {
        let old = self
            .db
            .write()
            .map_err(|_| StoreError::Engine("store lock poisoned".into()))?
            .take();
        if let Some(mut old) = old {
            // Readers finish their snapshot in microseconds; wait for them to let go.
            for _ in 0..200 {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        let db = builder()
            .create(&self.path)
            .map_err(|e| StoreError::Engine(format!("reopen {}: {e}", self.path.display())))?;
        *self
            .db
            .write()
            .map_err(|_| StoreError::Engine("store lock poisoned".into()))? = Some(Arc::new(db));
        tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
        Ok(())
    }
}

pub(crate) struct Shared {
    pub(crate) db: Arc<Core>,
    tx: Option<SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    /// Closes the store for good before returning: the writer finishes what is
    /// queued, and the file is released, so it can be reopened at once.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            // The last handle may be dropped by a step running on the writer itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

pub(crate) fn start(
    db: redb::Database,
    path: std::path::PathBuf,
    heartbeat: Duration,
) -> Result<Arc<Shared>, StoreError> {
    let core = Arc::new(Core {
        db: std::sync::RwLock::new(Some(Arc::new(db))),
        path,
        status: Mutex::new(Status::default()),
        queued: AtomicUsize::new(0),
        observer: std::sync::RwLock::new(None),
        before_durable: std::sync::RwLock::new(None),
        progress: tokio::sync::watch::Sender::new(Progress::default()),
    });
    let (tx, rx) = sync_channel(QUEUE_CAPACITY);
    let thread_core = core.clone();
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(&thread_core, &rx, heartbeat))
        .map_err(|e| StoreError::Engine(format!("cannot start the writer thread: {e}")))?;
    Ok(Arc::new(Shared {
        db: core,
        tx: Some(tx),
        thread: Some(thread),
    }))
}

fn run(core: &Core, rx: &Receiver<Job>, heartbeat: Duration) {
    loop {
        let dirty = {
            let p = core.progress.borrow();
            p.durable < p.committed
        };
        let wait = if dirty { DEFERRED_FLUSH } else { heartbeat };
        let first = match rx.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Closing: deferred commits are made durable before the file is let go.
                if dirty {
                    commit_batch(core, Vec::new());
                }
                return;
            }
        };
        let mut jobs = Vec::new();
        if let Some(job) = first {
            jobs.push(job);
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        core.queued.fetch_sub(jobs.len(), Ordering::AcqRel);
        commit_batch(core, jobs);
    }
}

fn commit_batch(core: &Core, jobs: Vec<Job>) {
    let (committed, durable_so_far) = {
        let p = core.progress.borrow();
        (p.committed, p.durable)
    };
    let only_syncs = !jobs.is_empty() && jobs.iter().all(|j| matches!(j, Job::Sync));
    if only_syncs && durable_so_far == committed {
        return;
    }
    // Durable unless every job is a deferred step (an idle pass is the flush).
    let durable = jobs.is_empty() || !jobs.iter().all(|j| matches!(j, Job::Step(_, false)));
    let started = Instant::now();
    if let Ok(mut s) = core.status.lock() {
        s.busy_since = Some(started);
    }
    let mut delivers = Vec::with_capacity(jobs.len());
    let mut steps = 0u64;
    let outcome = (|| -> Result<(), StoreError> {
        let db = core.db()?;
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Engine(format!("deferred commit: {e}")))?;
        }
        let mut failed = None;
        for job in jobs {
            match job {
                Job::Stall(d) => std::thread::sleep(d),
                Job::Sync => {}
                Job::Step(step, _) => {
                    let ran = step(&txn);
                    if failed.is_none() {
                        failed = ran.apply_failed;
                    }
                    steps += 1;
                    delivers.push(ran.deliver);
                }
            }
        }
        if let Some(e) = failed {
            // A step's writes reached the transaction only in part: keep none of the batch.
            let _ = txn.abort();
            return Err(e);
        }
        if steps == 0 {
            // An idle heartbeat still writes (and fsyncs) something, so a
            // stuck disk shows in health; a batch of steps needs no more pages.
            let mut t = txn.open_table(definition(HEARTBEAT_TABLE))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            t.insert(&b"last_commit"[..], &now.to_be_bytes()[..])?;
        }
        if durable {
            if let Err(e) = core.before_durable_commit() {
                let _ = txn.abort();
                return Err(e);
            }
        }
        txn.commit()?;
        Ok(())
    })();
    let seq = committed + 1;
    core.progress.send_modify(|p| match &outcome {
        Ok(()) => {
            p.committed = seq;
            if durable {
                p.durable = seq;
                p.failed = None;
            }
        }
        Err(e) => {
            if durable && p.durable < p.committed {
                p.failed = Some((p.committed, e.to_string()));
            }
        }
    });
    if let Ok(mut s) = core.status.lock() {
        s.busy_since = None;
        match &outcome {
            Ok(()) if steps == 0 => s.last_error = None,
            Ok(()) => {
                s.stats.commits += 1;
                s.stats.steps += steps;
                s.stats.max_batch = s.stats.max_batch.max(steps);
                s.last_error = None;
            }
            Err(e) => {
                s.stats.failed_commits += 1;
                s.last_error = Some(e.to_string());
                tracing::error!(error = %e, steps, "store commit failed; every step in it was refused");
            }
        }
    }
    if outcome.is_ok() && steps > 0 {
        if let Ok(Some(observe)) = core.observer.read().as_deref() {
            observe(started.elapsed(), steps);
        }
    }
    if outcome.is_err() {
        if let Err(e) = core.reopen() {
            tracing::error!(error = %e, "store could not be reopened; retrying at the next commit");
        }
    }
    for deliver in delivers {
        deliver(outcome.clone(), seq);
    }
}

fn run_step<R, E, F>(txn: &redb::WriteTransaction, op: F) -> (Result<R, E>, Option<StoreError>)
where
    F: FnOnce(&mut WriteTxn<'_>) -> Result<R, E>,
    E: From<StoreError>,
{
    let mut w = WriteTxn::new(txn);
    let result = match catch_unwind(AssertUnwindSafe(|| op(&mut w))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("a store step panicked; its writes were dropped");
            return (
                Err(
                    StoreError::Engine("a store step panicked (bug); nothing was written".into())
                        .into(),
                ),
                None,
            );
        }
    };
    if result.is_err() {
        return (result, None);
    }
    match w.apply() {
        Ok(_) => (result, None),
        Err(e) => (Err(e.clone().into()), Some(e)),
    }
}

impl Shared {
    pub(crate) fn submit<R, E, F>(&self, op: F, durable: bool) -> Result<Answer<R, E>, StoreError>
    where
        F: FnOnce(&mut WriteTxn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let step = move |txn: &redb::WriteTransaction| {
            let (result, apply_failed) = run_step(txn, op);
            let deliver: Deliver = Box::new(move |commit: Result<(), StoreError>, seq| {
                let out = match (result, commit) {
                    (Ok(r), Ok(())) => Ok((r, seq)),
                    (Ok(_), Err(e)) => Err(E::from(e)),
                    (Err(e), _) => Err(e),
                };
                // The caller may have stopped waiting (a cancelled RPC): the step is done either way.
                let _ = tx.send(out);
            });
            Ran {
                deliver,
                apply_failed,
            }
        };
        self.enqueue(Job::Step(Box::new(step), durable))?;
        Ok(rx)
    }

    /// Waits until commit `seq` is durable, asking the writer for a durable
    /// commit if none is on its way.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.db.progress.subscribe();
        if rx.borrow().durable >= seq {
            return Ok(());
        }
        self.enqueue(Job::Sync)?;
        let p = rx
            .wait_for(|p| p.durable >= seq || p.failed.as_ref().is_some_and(|(f, _)| *f >= seq))
            .await
            .map_err(|_| StoreError::Stopped)?;
        match &p.failed {
            Some((f, e)) if p.durable < seq && *f >= seq => Err(StoreError::Engine(format!(
                "a deferred write could not be made durable: {e}"
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn before_durable(&self, hook: BeforeDurable) {
        if let Ok(mut slot) = self.db.before_durable.write() {
            *slot = Some(hook);
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        self.db.queued.fetch_add(1, Ordering::AcqRel);
        let Some(tx) = &self.tx else {
            return Err(StoreError::Stopped);
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let queued = self.db.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    TrySendError::Full(_) => {
                        if let Ok(mut s) = self.db.status.lock() {
                            s.stats.refused_busy += 1;
                        }
                        Err(StoreError::Busy { queued })
                    }
                    TrySendError::Disconnected(_) => Err(StoreError::Stopped),
                }
            }
        }
    }

    pub(crate) fn inject_stall(&self, d: Duration) -> Result<(), StoreError> {
        self.enqueue(Job::Stall(d))
    }

    pub(crate) fn write_now<R, E>(
        &self,
        op: impl FnOnce(&mut WriteTxn<'_>) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let db = self.db.db()?;
        let txn = db.begin_write().map_err(StoreError::from)?;
        let (result, apply_failed) = run_step(&txn, op);
        if let Some(e) = apply_failed {
            let _ = txn.abort();
            return Err(e.into());
        }
        let value = result?;
        // Durable, like any batch: deferred commits before it become durable too.
        if let Err(e) = self.db.before_durable_commit() {
            let _ = txn.abort();
            return Err(e.into());
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    pub(crate) fn health(&self) -> Result<(), String> {
        let s = self
            .db
            .status
            .lock()
            .map_err(|_| "store status lock poisoned".to_string())?;
        if let Some(since) = s.busy_since {
            let held = since.elapsed();
            if held > STUCK_AFTER {
                return Err(format!(
                    "store commit in progress for {:.1} s (disk stalled?)",
                    held.as_secs_f64()
                ));
            }
        }
        match &s.last_error {
            Some(e) => Err(format!("last store commit failed: {e}")),
            None => Ok(()),
        }
    }

    pub(crate) fn observe_commits(&self, observer: CommitObserver) {
        if let Ok(mut slot) = self.db.observer.write() {
            *slot = Some(observer);
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut stats = self
            .db
            .status
            .lock()
            .map(|s| s.stats.clone())
            .unwrap_or_default();
        stats.queued = self.db.queued.load(Ordering::Acquire) as u64;
        stats
    }
}
