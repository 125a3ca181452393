//! The master's data dir: a lock, a header that says whose data it is and in
//! which on-disk version, the database, and the snapshot files.
//!
//! Layout of `DATA_PATH`:
//! - `LOCK`: flock'ed while a daemon has the dir open; says `pid N`.
//! - `meta.sled/`: the [`SledStore`]; tree `meta`, key `data_version` holds
//!   the [`DataVersion`] header.
//! - `snapshots/`: metadata images ([`super::snapfile`]).
//!
//! Data versions (what changed, when; bump [`DATA_VERSION`] with an upgrade
//! step in `upgrade`, and raise [`MIN_DATA_VERSION`] when a step is dropped):
//! - 1 (2026-11): first layout.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::record::{self, from_record};
use super::{MetaStore, Result, SledStore, StoreError, Tree};

/// The data version this build writes.
pub const DATA_VERSION: u32 = 1;
/// The oldest data version this build can open (upgrading it in place).
pub const MIN_DATA_VERSION: u32 = 1;
/// What to run on a data dir older than [`MIN_DATA_VERSION`].
const UPGRADE_WITH: &str = "the rmfs release that wrote it, then each newer release in turn";

pub const LOCK_FILE: &str = "LOCK";
pub const DB_DIR: &str = "meta.sled";
pub const SNAPSHOT_DIR: &str = "snapshots";
/// The Raft log's segment files.
pub const LOG_DIR: &str = "raftlog";
/// The tree holding the header; the Raft layer may keep its own small records
/// here too, under other keys.
pub const META_TREE: &str = "meta";
pub const DATA_VERSION_KEY: &[u8] = b"data_version";

/// The header of a data dir. `version` stays the first field in every
/// version, so it can be read before the rest is understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataVersion {
    pub version: u32,
    pub node_id: u64,
    pub cluster_id: Option<String>,
}

/// An exclusive flock on `<dir>/LOCK`, held until dropped.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or says who holds it. Never waits.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(StoreError::io("lock", &path)(e)),
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "pid {}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io("write lock file", &path))?;
        Ok(DirLock { _file: file })
    }
}

/// An open data dir: its header, checked against this daemon.
pub struct DataDir {
    dir: PathBuf,
    meta: Tree,
    header: Mutex<DataVersion>,
    store: Arc<dyn MetaStore>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("dir", &self.dir)
            .field("header", &*self.lock_header())
            .finish()
    }
}

impl DataDir {
    /// Opens the data dir at `path` for node `node_id`: creates it if missing,
    /// locks it, opens the database and checks (or on first open writes) the
    /// header. The lock is held as long as the returned store lives.
    pub fn open(path: &Path, node_id: u64) -> Result<(DataDir, Arc<dyn MetaStore>)> {
        fs::create_dir_all(path).map_err(StoreError::io("create data dir", path))?;
        let lock = DirLock::acquire(path)?;
        let snapshots = path.join(SNAPSHOT_DIR);
        fs::create_dir_all(&snapshots)
            .map_err(StoreError::io("create snapshot dir", &snapshots))?;
        let store: Arc<dyn MetaStore> = Arc::new(SledStore::open_locked(&path.join(DB_DIR), lock)?);
        let dd = DataDir::init(path, node_id, store.clone())?;
        Ok((dd, store))
    }

    /// Checks or writes the header in an already open `store`; `path` is only
    /// used in messages and for [`DataDir::snapshot_dir`]. For other engines
    /// and tests; [`DataDir::open`] is the daemon's way in.
    pub fn init(path: &Path, node_id: u64, store: Arc<dyn MetaStore>) -> Result<DataDir> {
        let dir = path.to_path_buf();
        let meta = store.tree(META_TREE)?;
        let header = match meta.get(DATA_VERSION_KEY)? {
            Some(bytes) => {
                let header = read_header(&dir, &bytes)?;
                if header.node_id != node_id {
                    return Err(StoreError::NodeIdMismatch {
                        dir,
                        stored: header.node_id,
                        given: node_id,
                    });
                }
                upgrade(&meta, header)?
            }
            None => {
                for name in store.tree_names()? {
                    if !store.tree(&name)?.is_empty()? {
                        return Err(StoreError::MissingHeader { dir });
                    }
                }
                let header = DataVersion {
                    version: DATA_VERSION,
                    node_id,
                    cluster_id: None,
                };
                meta.put_record(DATA_VERSION_KEY, &header)?;
                meta.flush()?;
                header
            }
        };
        Ok(DataDir {
            dir,
            meta,
            header: Mutex::new(header),
            store,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where snapshot files go (`<path>/snapshots`, created by `open`).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_DIR)
    }

    /// Where the Raft log's segment files go (`<path>/raftlog`).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join(LOG_DIR)
    }

    pub fn store(&self) -> Arc<dyn MetaStore> {
        self.store.clone()
    }

    pub fn header(&self) -> DataVersion {
        self.lock_header().clone()
    }

    pub fn node_id(&self) -> u64 {
        self.lock_header().node_id
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.lock_header().cluster_id.clone()
    }

    /// Records the cluster this node belongs to, durably. Setting the same id
    /// again is fine; a different one is refused.
    pub fn set_cluster_id(&self, id: &str) -> Result<()> {
        let mut header = self.lock_header();
        match &header.cluster_id {
            Some(stored) if stored == id => Ok(()),
            Some(stored) => Err(StoreError::ClusterIdMismatch {
                dir: self.dir.clone(),
                stored: stored.clone(),
                given: id.to_string(),
            }),
            None => {
                let new = DataVersion {
                    cluster_id: Some(id.to_string()),
                    ..header.clone()
                };
                self.meta.put_record(DATA_VERSION_KEY, &new)?;
                self.meta.flush()?;
                *header = new;
                Ok(())
            }
        }
    }

    fn lock_header(&self) -> MutexGuard<'_, DataVersion> {
        self.header.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decodes the header, checking the version before the rest of the layout.
fn read_header(dir: &Path, bytes: &[u8]) -> Result<DataVersion> {
    let corrupt = |e| StoreError::corrupt(META_TREE, DATA_VERSION_KEY, e);
    let (_, payload) = record::decode(bytes).map_err(corrupt)?;
    let (found, _): (u32, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| corrupt(record::RecordError::Payload(e.to_string())))?;
    if found > DATA_VERSION {
        return Err(StoreError::DataTooNew {
            dir: dir.to_path_buf(),
            found,
            supported: DATA_VERSION,
        });
    }
    if found < MIN_DATA_VERSION {
        return Err(StoreError::DataTooOld {
            dir: dir.to_path_buf(),
            found,
            min: MIN_DATA_VERSION,
            upgrade_with: UPGRADE_WITH,
        });
    }
    from_record(bytes).map_err(corrupt)
}

/// Brings a readable older data dir up to [`DATA_VERSION`]. Each version's
/// step goes here, in order, before the header is rewritten; none exist yet.
fn upgrade(meta: &Tree, mut header: DataVersion) -> Result<DataVersion> {
    if header.version < DATA_VERSION {
        header.version = DATA_VERSION;
        meta.put_record(DATA_VERSION_KEY, &header)?;
        meta.flush()?;
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn first_open_writes_header_and_reopen_checks_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        {
            let (dd, _store) = DataDir::open(&path, 7).unwrap();
            assert_eq!(
                dd.header(),
                DataVersion {
                    version: DATA_VERSION,
                    node_id: 7,
                    cluster_id: None
                }
            );
            assert!(dd.snapshot_dir().is_dir());
            assert!(path.join(LOCK_FILE).is_file());
        }
        let (dd, _store) = DataDir::open(&path, 7).unwrap();
        assert_eq!(dd.node_id(), 7);
    }

    #[test]
    fn node_id_mismatch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path(), 1).unwrap());
        let err = DataDir::open(tmp.path(), 2).err().unwrap();
        assert!(matches!(
            err,
            StoreError::NodeIdMismatch {
                stored: 1,
                given: 2,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("node 1") && msg.contains("node 2"), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("point DATA_PATH elsewhere or wipe it"),
            "{msg}"
        );
    }

    #[test]
    fn cluster_id_is_set_once_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (dd, _store) = DataDir::open(tmp.path(), 1).unwrap();
            assert_eq!(dd.cluster_id(), None);
            dd.set_cluster_id("alpha").unwrap();
            dd.set_cluster_id("alpha").unwrap();
            let err = dd.set_cluster_id("beta").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("\"alpha\"") && msg.contains("\"beta\""),
                "{msg}"
            );
            assert_eq!(dd.cluster_id().as_deref(), Some("alpha"));
        }
        let (dd, _store) = DataDir::open(tmp.path(), 1).unwrap();
        assert_eq!(dd.cluster_id().as_deref(), Some("alpha"));
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let (dd, store) = DataDir::open(tmp.path(), 1).unwrap();
        let err = DataDir::open(tmp.path(), 1).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        let msg = err.to_string();
        let dir = tmp.path().display().to_string();
        assert!(msg.contains(&format!("data dir {dir} is locked")), "{msg}");
        assert!(msg.contains(&format!("DATA_PATH={dir}")), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // The lock lives as long as the store and its trees, not the DataDir.
        let tree = store.tree("raft_log").unwrap();
        drop(dd);
        assert!(DataDir::open(tmp.path(), 1).is_err());
        drop(store);
        assert!(DataDir::open(tmp.path(), 1).is_err());
        drop(tree);
        DataDir::open(tmp.path(), 1).unwrap();
    }

    fn with_header(version: u32) -> Arc<dyn MetaStore> {
        let store = MemStore::new_arc();
        let header = DataVersion {
            version,
            node_id: 1,
            cluster_id: None,
        };
        let meta = store.tree(META_TREE).unwrap();
        meta.put_record(DATA_VERSION_KEY, &header).unwrap();
        store
    }

    #[test]
    fn newer_and_older_data_versions_are_refused() {
        let path = Path::new("/srv/mfs");
        let err = DataDir::init(path, 1, with_header(DATA_VERSION + 1)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "written by a newer rmfs (data version {}), this build reads up to {DATA_VERSION}",
                DATA_VERSION + 1
            )),
            "{msg}"
        );
        let err = DataDir::init(path, 1, with_header(MIN_DATA_VERSION - 1)).unwrap_err();
        assert!(matches!(err, StoreError::DataTooOld { .. }), "{err}");
        assert!(err.to_string().contains("/srv/mfs"), "{err}");
    }

    #[test]
    fn data_without_header_is_refused() {
        let store = MemStore::new_arc();
        store.tree("raft_log").unwrap().insert(b"k", b"v").unwrap();
        let err = DataDir::init(Path::new("/x"), 1, store).unwrap_err();
        assert!(matches!(err, StoreError::MissingHeader { .. }), "{err}");
    }

    #[test]
    fn corrupt_header_is_reported() {
        let store = MemStore::new_arc();
        let meta = store.tree(META_TREE).unwrap();
        let mut bytes = record::to_record(&DataVersion {
            version: 1,
            node_id: 1,
            cluster_id: None,
        })
        .unwrap();
        bytes[1] ^= 0x40;
        meta.insert(DATA_VERSION_KEY, &bytes).unwrap();
        let err = DataDir::init(Path::new("/x"), 1, store).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("bad CRC"), "{err}");
    }
}
