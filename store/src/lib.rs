//! The durable store of the node and the coordinator: typed tables of
//! versioned records on [`redb`], written by one writer thread that
//! group-commits whatever writes are queued (one fsync for many requests).
//!
//! Why redb and not sled: sled 0.34.7 (its last release) deadlocks when many
//! tasks call `flush_async` at once (sled issue 1308); under 8–16 concurrent
//! withdrawals both daemons wedged with every sled IO thread parked in
//! `make_stable_inner`. redb has one writer at a time and a durable commit,
//! which is exactly what group commit needs.
//!
//! How a write works:
//! - [`Store::write`] queues a closure and waits. The writer thread takes every
//!   queued closure (up to [`MAX_BATCH`]), runs them one after the other in ONE
//!   redb write transaction, and commits it. Each caller gets its result only
//!   after that commit is durable.
//! - Each closure is all-or-nothing on its own: its writes go to a private
//!   overlay and reach the transaction only if it returns `Ok`. A refusal (an
//!   `Err`) therefore never leaves half a step behind, and never affects the
//!   other closures of the batch.
//! - A queued closure runs even if its caller stops waiting (a cancelled RPC):
//!   every multi-key step is one closure, so it happens entirely or not at all.
//! - A full queue is refused at once with [`StoreError::Busy`] (backpressure),
//!   never waited on.
//!
//! The writer also commits a heartbeat when idle, so a disk that stopped
//! accepting writes is noticed by [`Store::health`] even without traffic.

mod codec;
mod txn;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use codec::{Bytes, Codec, Versioned, RECORD_VERSION, U128, U64};
pub use txn::{Entries, ReadTxn, Table, WriteTxn};
pub use writer::{
    BeforeDurable, CommitObserver, StoreStats, DEFERRED_FLUSH, MAX_BATCH, QUEUE_CAPACITY,
};

/// Errors of the store, named for what the caller can do.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The write queue is full: the caller should back off and retry.
    #[error("store busy: {queued} writes queued; retry shortly")]
    Busy {
        /// Writes waiting when this one was refused.
        queued: usize,
    },
    /// The storage engine failed (I/O error, disk full); nothing of the step was kept.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record cannot be read by this build (corrupt, or another version).
    #[error("stored {what} record unreadable: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The data directory holds something this build refuses to open.
    #[error("{0}")]
    Refused(String),
    /// The writer thread is gone (the store is shutting down, or a bug).
    #[error("store writer stopped")]
    Stopped,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(e.to_string())
            }
        }
    )*};
}
engine_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The promise of a [`Store::write_deferred`] step: resolves once its commit
/// is durable.
#[derive(Debug)]
#[must_use = "a deferred write is not durable until this is awaited"]
pub struct Durable {
    seq: u64,
    writer: std::sync::Weak<writer::Shared>,
}

impl Durable {
    /// Waits until the step's commit is durable (asking the writer for a
    /// durable commit now if none is on its way).
    pub async fn wait(self) -> Result<(), StoreError> {
        let writer = self.writer.upgrade().ok_or(StoreError::Stopped)?;
        writer.durable(self.seq).await
    }
}

/// A store shared by every task of a daemon (cheap to clone).
#[derive(Clone)]
pub struct Store {
    inner: Arc<writer::Shared>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One stored entry as [`Store::dump`] lists it: `(table, key, value)`.
pub type DumpedEntry = (String, Vec<u8>, Vec<u8>);

/// Name of the store file inside a data directory.
pub const STORE_FILE: &str = "store.redb";

/// What earlier releases kept in the data directory (a sled directory).
const LEGACY_SLED_DIR: &str = "store";

/// A new store is made under this name and renamed into place once whole.
const CREATING_FILE: &str = "store.redb.creating";

/// Makes a new, empty store file at `path` so that it either does not exist
/// or is a whole database: a daemon killed while its store is first created
/// (before its signal handlers are installed, say) leaves only the
/// `.creating` file, which holds no data and is replaced on the next start.
fn create_atomically(data_dir: &Path, path: &Path) -> Result<(), StoreError> {
    let creating = data_dir.join(CREATING_FILE);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Engine(format!("{what} {}: {e}", p.display()))
    };
    match std::fs::remove_file(&creating) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove", &creating, e)),
    }
    let db = writer::builder()
        .create(&creating)
        .map_err(|e| StoreError::Engine(format!("cannot create {}: {e}", creating.display())))?;
    drop(db);
    std::fs::File::open(&creating)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot flush", &creating, e))?;
    std::fs::rename(&creating, path).map_err(|e| io("cannot publish", path, e))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot flush", data_dir, e))
}

impl Store {
    /// Whether `data_dir` holds a store (of this release or an earlier one).
    pub fn exists_in(data_dir: &Path) -> bool {
        data_dir.join(STORE_FILE).exists() || data_dir.join(LEGACY_SLED_DIR).exists()
    }

    /// Opens (or creates) `data_dir/store.redb` with `tables` created, and
    /// starts its writer thread. A data dir still holding an earlier release's
    /// sled store is refused, never reset or silently replaced.
    pub fn open(data_dir: &Path, tables: &[&'static str]) -> Result<Self, StoreError> {
        let legacy = data_dir.join(LEGACY_SLED_DIR);
        if legacy.exists() {
            return Err(StoreError::Refused(format!(
                "{} is a sled store from an earlier Permafrost release; this release stores data \
                 in {} (redb) because sled 0.34 deadlocks under concurrent flushes. It was not \
                 opened or changed: move the data dir aside and re-create the node, or restore \
                 it with the release that wrote it",
                legacy.display(),
                STORE_FILE
            )));
        }
        let path = data_dir.join(STORE_FILE);
        if !path.exists() {
            create_atomically(data_dir, &path)?;
        }
        let db = writer::builder()
            .create(&path)
            .map_err(|e| StoreError::Engine(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write()?;
        for name in tables {
            txn.open_table(txn::definition(name))?;
        }
        txn.open_table(txn::definition(writer::HEARTBEAT_TABLE))?;
        txn.commit()?;
        Ok(Self {
            inner: writer::start(db, path.clone(), Duration::from_secs(1))?,
            path,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads from one consistent snapshot.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&ReadTxn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        use redb::ReadableDatabase;
        let db = self.inner.db.db()?;
        let txn = db.begin_read()?;
        f(&ReadTxn::new(txn))
    }

    /// One value from a fresh snapshot.
    pub fn get<C: Codec>(
        &self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<C::Value>, StoreError> {
        self.read(|r| r.get(table, key))
    }

    /// Every `(key, value)` of a table, in key order, from a fresh snapshot.
    pub fn all<C: Codec>(&self, table: &Table<C>) -> Result<Entries<C::Value>, StoreError> {
        self.read(|r| r.scan(table, ..))
    }

    /// Runs `op` as one all-or-nothing step of the next group commit and
    /// returns its result once the commit is durable. `op` runs on the writer
    /// thread: keep it to reads, checks and writes (no network, no waiting).
    pub async fn write<R, E, F>(&self, op: F) -> Result<R, E>
    where
        F: FnOnce(&mut WriteTxn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let rx = self.inner.submit(op, true)?;
        match rx.await {
            Ok(result) => result.map(|(r, _)| r),
            Err(_) => Err(StoreError::Stopped.into()),
        }
    }

    /// Like [`Store::write`], but answered once the step is committed and
    /// visible, before it is durable: what it wrote can be lost by a crash
    /// (never torn: a later durable commit keeps it whole) until the
    /// [`Durable`] returned resolves. For a caller with other work to do
    /// before it answers anyone (the coordinator signs while its request
    /// record becomes durable).
    pub async fn write_deferred<R, E, F>(&self, op: F) -> Result<(R, Durable), E>
    where
        F: FnOnce(&mut WriteTxn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let rx = self.inner.submit(op, false)?;
        match rx.await {
            Ok(result) => result.map(|(r, seq)| {
                (
                    r,
                    Durable {
                        seq,
                        writer: Arc::downgrade(&self.inner),
                    },
                )
            }),
            Err(_) => Err(StoreError::Stopped.into()),
        }
    }

    /// Runs `hook` on the writer thread before every durable commit (see
    /// [`writer::BeforeDurable`]).
    pub fn before_durable_commit(&self, hook: writer::BeforeDurable) {
        self.inner.before_durable(hook);
    }

    /// Like [`Store::write`], for callers outside the async runtime (start-up,
    /// `init`): runs the step in its own transaction on the calling thread,
    /// after any batch in progress.
    pub fn write_blocking<R, E>(
        &self,
        op: impl FnOnce(&mut WriteTxn<'_>) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        self.inner.write_now(op)
    }

    /// Every entry of every table as `(table, key, value)` (tests compare
    /// what is stored, not the engine's files; the writer's heartbeat is left out).
    pub fn dump(&self) -> Result<Vec<DumpedEntry>, StoreError> {
        use redb::{ReadableDatabase, ReadableTable, TableHandle};
        let db = self.inner.db.db()?;
        let txn = db.begin_read()?;
        let mut out = Vec::new();
        for handle in txn.list_tables()? {
            let name = handle.name().to_string();
            if name == writer::HEARTBEAT_TABLE {
                continue;
            }
            let def: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new(&name);
            let table = txn.open_table(def)?;
            for kv in table.iter()? {
                let (k, v) = kv?;
                out.push((name.clone(), k.value().to_vec(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// Whether the store is committing: `Err` names why not (a commit stuck for
    /// seconds, or the last commit failed).
    pub fn health(&self) -> Result<(), String> {
        self.inner.health()
    }

    /// Counters for status and the benchmark.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    /// Calls `observer` after every durable commit (commit latency and batch
    /// size for metrics); replaces any observer set before.
    pub fn observe_commits(&self, observer: CommitObserver) {
        self.inner.observe_commits(observer)
    }

    /// Fault injection for tests: holds the writer for `d`, as a hung disk would.
    /// Every write queued meanwhile waits; reads go on.
    pub fn inject_stall(&self, d: Duration) -> Result<(), StoreError> {
        self.inner.inject_stall(d)
    }
}

#[cfg(test)]
mod tests;
