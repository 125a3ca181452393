//! The sled 0.34 engine. sled is crash-consistent on its own (a log of
//! checksummed pages; a batch is atomic across a crash); `flush` fsyncs it.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::datadir::DirLock;
use super::{Batch, BatchOp, FlushFuture, Iter, MetaStore, Result, StoreError, Tree, TreeEngine};

const ENGINE: &str = "sled";
/// sled's own tree that every database has; not one of ours.
const DEFAULT_TREE: &[u8] = b"__sled__default";
/// Page cache cap. The namespace lives in the state machine's RAM, not here;
/// this only caches recent log entries.
const CACHE_CAPACITY: u64 = 256 << 20;
/// How long `open` waits for sled's lock to be released by a closing handle.
pub const LOCK_RETRY: Duration = Duration::from_secs(3);

/// The sled [`MetaStore`]. The database closes (and its lock, and the data
/// dir's `LOCK` if opened through [`super::DataDir`], is released) when the
/// store and every [`Tree`] and [`Iter`] taken from it are dropped.
pub struct SledStore {
    // Field order matters: the database closes before the lock is released.
    db: sled::Db,
    path: PathBuf,
    lock: Option<Arc<DirLock>>,
}

impl SledStore {
    /// Opens (creating if missing) the sled database in directory `path`.
    ///
    /// sled releases its own file lock some time after the last handle
    /// (store, [`Tree`] or iterator) is dropped, as deferred cleanup runs; so
    /// a lock conflict is retried for up to [`LOCK_RETRY`] before it is
    /// reported. [`super::DataDir::open`] takes its own lock first, so a
    /// conflict there is always a lingering handle of this process.
    pub fn open(path: &Path) -> Result<SledStore> {
        let deadline = Instant::now() + LOCK_RETRY;
        let mut pause = Duration::from_millis(5);
        let db = loop {
            let opened = sled::Config::new()
                .path(path)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(CACHE_CAPACITY)
                .open();
            match opened {
                Ok(db) => break db,
                Err(e) if is_lock_conflict(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(open_error(path, e)),
            }
        };
        Ok(SledStore {
            db,
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// Like [`SledStore::open`], holding `lock` until the store and every
    /// tree taken from it are dropped.
    pub(crate) fn open_locked(path: &Path, lock: DirLock) -> Result<SledStore> {
        let mut store = SledStore::open(path)?;
        store.lock = Some(Arc::new(lock));
        Ok(store)
    }

    /// The directory sled lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Turns a sled open failure into a message that says what to do.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    let reason = match &e {
        e if is_lock_conflict(e) => {
            "it is locked by another process (another mfsmaster using this data dir?)".to_string()
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{io}: check that the user running mfsmaster owns it and can write to it")
        }
        sled::Error::Io(io) => io.to_string(),
        sled::Error::Corruption { .. } => format!(
            "{e}: restore it from a metalogger backup, or wipe the data dir and let this node \
             resync from the leader"
        ),
        sled::Error::Unsupported(msg) => {
            format!("{msg} (written by an incompatible sled version?)")
        }
        other => other.to_string(),
    };
    StoreError::Open {
        engine: ENGINE,
        path: path.to_path_buf(),
        reason,
    }
}

fn engine_error(e: sled::Error) -> StoreError {
    let source: Box<dyn std::error::Error + Send + Sync> = match e {
        sled::Error::Io(io) => Box::new(io),
        other => Box::new(other),
    };
    StoreError::Engine {
        engine: ENGINE,
        source,
    }
}

/// Flushes on tokio's blocking pool, not sled's own `flush_async`: sled's
/// pool wakes every idle thread of it for each job.
fn flush_future(tree: sled::Tree) -> FlushFuture {
    Box::pin(async move {
        match tokio::task::spawn_blocking(move || tree.flush()).await {
            Ok(res) => res.map(drop).map_err(engine_error),
            Err(e) => Err(StoreError::Engine {
                engine: ENGINE,
                source: Box::new(std::io::Error::other(format!("flush task failed: {e}"))),
            }),
        }
    })
}

impl MetaStore for SledStore {
    fn engine(&self) -> &'static str {
        ENGINE
    }

    fn tree(&self, name: &str) -> Result<Tree> {
        let tree = self.db.open_tree(name).map_err(engine_error)?;
        let lock = self.lock.clone();
        Ok(Tree::new(name, Arc::new(SledTree { tree, _lock: lock })))
    }

    fn tree_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != DEFAULT_TREE)
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(engine_error)
    }

    fn flush_async(&self) -> FlushFuture {
        // `Db` derefs to its default tree; flushing any tree flushes the whole log.
        flush_future((*self.db).clone())
    }
}

struct SledTree {
    tree: sled::Tree,
    /// Keeps the data dir locked while this handle can still write.
    _lock: Option<Arc<DirLock>>,
}

impl TreeEngine for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value).map(drop).map_err(engine_error)
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        Ok(self.tree.remove(key).map_err(engine_error)?.is_some())
    }

    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Iter {
        Iter::new(self.tree.range::<Vec<u8>, _>((lo, hi)).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_error)
        }))
    }

    fn apply_batch(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Insert(k, v) => b.insert(k, v),
                BatchOp::Remove(k) => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(engine_error)
    }

    fn flush(&self) -> Result<()> {
        self.tree.flush().map(drop).map_err(engine_error)
    }

    fn flush_async(&self) -> FlushFuture {
        flush_future(self.tree.clone())
    }
}
