//! openraft's storage suite on our real log store (sled) and state machine,
//! and the torn-tail recovery of the log.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use super::sm::StateMachine;
use super::store::LogStore;
use super::types::*;
use crate::store::{record, Batch, MemStore, MetaStore, SledStore};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db: Arc<dyn MetaStore> =
            Arc::new(SledStore::open(&dir.path().join("db")).expect("open sled"));
        let log = LogStore::open(db).expect("open log");
        let sm = StateMachine::open(dir.path().join("snapshots"), 3).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder)
        .await
        .expect("openraft storage suite");
}

/// A record at the tail whose CRC does not match (a write torn by a crash)
/// is dropped at open; the entries before it stay.
#[tokio::test]
async fn torn_tail_record_is_dropped() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};

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
    let mut store = LogStore::open(db.clone()).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id.map(|l| l.index), Some(3));
    let mut r = store.get_log_reader().await;
    assert_eq!(r.try_get_log_entries(0..10).await.unwrap().len(), 4);
}
