//! openraft's storage suite on our real log store (segment files, meta in
//! sled) and state machine, and the log's recovery and upgrade paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use super::sm::StateMachine;
use super::store::{LogStore, SyncPolicy, GROUPED_SYNC_ENTRIES};
use super::types::*;
use crate::store::{record, Batch, MemStore, MetaStore, SledStore};

/// A log with a sync policy, syncing in place (as a follower's) or not.
struct Builder(SyncPolicy, bool);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db: Arc<dyn MetaStore> =
            Arc::new(SledStore::open(&dir.path().join("db")).expect("open sled"));
        let log = LogStore::open(db, &dir.path().join("raftlog"), self.0).expect("open log");
        log.sync_in_place()
            .store(self.1, std::sync::atomic::Ordering::Relaxed);
        let sm = StateMachine::open(dir.path().join("snapshots"), 3).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder(SyncPolicy::Immediate, false))
        .await
        .expect("openraft storage suite");
}

/// The learner's log passes the same suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_grouped_sync() {
    Suite::test_all(Builder(
        SyncPolicy::Grouped(Duration::from_millis(2)),
        false,
    ))
    .await
    .expect("openraft storage suite");
}

/// A follower's log (syncing in place) passes the same suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_sync_in_place() {
    Suite::test_all(Builder(SyncPolicy::Immediate, true))
        .await
        .expect("openraft storage suite");
}

/// Syncing in place acknowledges an append before `append` returns, but
/// not while an earlier append waits at the flusher: acknowledgements keep
/// the order of the appends. Every entry is in the log after a reopen.
#[tokio::test]
async fn an_append_syncs_in_place_only_behind_nothing() {
    use futures::FutureExt;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    use std::sync::atomic::Ordering::Relaxed;

    let tmp = tempfile::tempdir().unwrap();
    let db: Arc<dyn MetaStore> = Arc::new(MemStore::new());
    let dir = tmp.path().join("raftlog");
    let wait = Duration::from_millis(500);
    let mut store = LogStore::open(db.clone(), &dir, SyncPolicy::Grouped(wait)).unwrap();
    let in_place = store.sync_in_place();
    let blank = |i: u64| -> Entry { openraft::testing::blank_ent::<TypeConfig>(1, 1, i) };

    in_place.store(true, Relaxed);
    let (tx, mut rx) = TypeConfig::oneshot();
    store
        .append([blank(0)], IOFlushed::signal(tx))
        .await
        .unwrap();
    assert!(
        matches!((&mut rx).now_or_never(), Some(Ok(Ok(())))),
        "an append in place was not acknowledged when append returned"
    );

    in_place.store(false, Relaxed);
    let (tx1, mut rx1) = TypeConfig::oneshot();
    store
        .append([blank(1)], IOFlushed::signal(tx1))
        .await
        .unwrap();
    in_place.store(true, Relaxed);
    let (tx2, mut rx2) = TypeConfig::oneshot();
    store
        .append([blank(2)], IOFlushed::signal(tx2))
        .await
        .unwrap();
    assert!(
        (&mut rx1).now_or_never().is_none(),
        "the flusher did not wait"
    );
    assert!(
        (&mut rx2).now_or_never().is_none(),
        "an append was acknowledged before the one queued ahead of it"
    );
    rx1.await.unwrap().unwrap();
    rx2.await.unwrap().unwrap();
    drop(store);

    let mut store = LogStore::open(db, &dir, SyncPolicy::Immediate).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id.map(|l| l.index), Some(2));
}

/// A learner's log acknowledges an append after a sync that waits for
/// company: a lone entry waits the whole time, a batch of
/// GROUPED_SYNC_ENTRIES is synced at once; both are in the log after a
/// reopen.
#[tokio::test]
async fn grouped_sync_waits_for_more_entries_or_enough_of_them() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};

    let tmp = tempfile::tempdir().unwrap();
    let db: Arc<dyn MetaStore> = Arc::new(MemStore::new());
    let dir = tmp.path().join("raftlog");
    let wait = Duration::from_millis(800);
    let mut store = LogStore::open(db.clone(), &dir, SyncPolicy::Grouped(wait)).unwrap();
    let blank = |i: u64| -> Entry { openraft::testing::blank_ent::<TypeConfig>(1, 1, i) };

    let t = Instant::now();
    store.blocking_append([blank(0)]).await.unwrap();
    let lone = t.elapsed();
    assert!(
        lone >= wait,
        "a lone entry was acknowledged after {lone:?}, before the {wait:?} wait"
    );

    let t = Instant::now();
    let n = GROUPED_SYNC_ENTRIES as u64;
    store.blocking_append((1..=n).map(blank)).await.unwrap();
    let many = t.elapsed();
    assert!(
        many < wait,
        "{n} entries waited {many:?}: they should be synced at once"
    );
    drop(store);

    let mut store = LogStore::open(db, &dir, SyncPolicy::Immediate).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id.map(|l| l.index), Some(n));
    let mut reader = store.get_log_reader().await;
    assert_eq!(
        reader.try_get_log_entries(0..=n).await.unwrap().len() as u64,
        n + 1
    );
}

/// A log kept in the engine's `raft_log` tree (data dirs from before the
/// segment files) is moved into segment files at open; a torn record at
/// its tail is dropped, the entries before it stay.
#[tokio::test]
async fn an_old_log_tree_is_moved_into_segments() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};

    let tmp = tempfile::tempdir().unwrap();
    let db: Arc<dyn MetaStore> = Arc::new(MemStore::new());
    let log = db.tree("raft_log").unwrap();
    let mut b = Batch::new();
    for i in 0..5u64 {
        let e: Entry = openraft::testing::blank_ent::<TypeConfig>(1, 1, i);
        let bytes = bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap();
        let mut rec = record::encode(1, &bytes);
        if i == 4 {
            let n = rec.len();
            rec[n - 1] ^= 0xff; // torn: the CRC no longer matches
        }
        b.insert(i.to_be_bytes().to_vec(), rec);
    }
    log.apply_batch(b).unwrap();
    let dir = tmp.path().join("raftlog");
    let mut store = LogStore::open(db.clone(), &dir, SyncPolicy::Immediate).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id.map(|l| l.index), Some(3));
    let mut r = store.get_log_reader().await;
    assert_eq!(r.try_get_log_entries(0..10).await.unwrap().len(), 4);
    assert!(
        log.range::<Vec<u8>, _>(..).next().is_none(),
        "old tree emptied"
    );
    drop((store, r));
    // Opened again: the entries are read from the segment files.
    let mut store = LogStore::open(db, &dir, SyncPolicy::Immediate).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id.map(|l| l.index), Some(3));
}

/// Entries appended survive a reopen, with the purge point and a
/// truncation.
#[tokio::test]
async fn appended_entries_survive_a_reopen() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};

    let tmp = tempfile::tempdir().unwrap();
    let db: Arc<dyn MetaStore> = Arc::new(SledStore::open(&tmp.path().join("db")).unwrap());
    let dir = tmp.path().join("raftlog");
    let mut store = LogStore::open(db.clone(), &dir, SyncPolicy::Immediate).unwrap();
    let entries: Vec<Entry> = (1..=20u64)
        .map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i))
        .collect();
    use openraft::type_config::TypeConfigExt;
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append(entries.clone(), IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().expect("append flushed");
    store.purge(entries[4].log_id).await.unwrap();
    store
        .truncate_after(Some(entries[14].log_id))
        .await
        .unwrap();
    drop(store);
    let mut store = LogStore::open(db, &dir, SyncPolicy::Immediate).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(5));
    assert_eq!(st.last_log_id.map(|l| l.index), Some(15));
    let mut r = store.get_log_reader().await;
    let got: Vec<u64> = r
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(got, (6..=15).collect::<Vec<_>>());
}
