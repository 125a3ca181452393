//! One test suite, run on every engine (`mem::*`, `sled::*`).

use std::ops::Bound;

use super::*;

fn k(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn keys(iter: impl Iterator<Item = Result<KeyValue>>) -> Vec<Vec<u8>> {
    iter.map(|item| item.map(|(k, _)| k))
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

fn ks(range: impl IntoIterator<Item = u64>) -> Vec<Vec<u8>> {
    range.into_iter().map(|i| k(i).to_vec()).collect()
}

fn insert_get_remove(store: &dyn MetaStore) {
    let t = store.tree("t").unwrap();
    assert_eq!(t.name(), "t");
    assert!(t.is_empty().unwrap());
    assert_eq!(t.get(b"a").unwrap(), None);
    t.insert(b"a", b"1").unwrap();
    t.insert(b"b", b"2").unwrap();
    t.insert(b"a", b"3").unwrap();
    assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
    assert!(t.contains_key(b"b").unwrap());
    assert_eq!(t.len().unwrap(), 2);
    assert!(t.remove(b"a").unwrap());
    assert!(!t.remove(b"a").unwrap());
    assert_eq!(t.get(b"a").unwrap(), None);
    assert_eq!(t.len().unwrap(), 1);
    // A second handle sees the same data; another tree does not.
    assert_eq!(
        store.tree("t").unwrap().get(b"b").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    let u = store.tree("u").unwrap();
    assert_eq!(u.get(b"b").unwrap(), None);
    let names = store.tree_names().unwrap();
    assert!(
        names.contains(&"t".to_string()) && names.contains(&"u".to_string()),
        "{names:?}"
    );
    t.clear().unwrap();
    assert!(t.is_empty().unwrap());
}

fn ordered_range(store: &dyn MetaStore) {
    let t = store.tree("log").unwrap();
    assert_eq!(t.first().unwrap(), None);
    assert_eq!(t.last().unwrap(), None);
    // Insert out of order; big-endian keys sort numerically.
    for i in [5u64, 1, 300, 2, 256, 4, 3] {
        t.insert(k(i), i.to_string()).unwrap();
    }
    assert_eq!(keys(t.iter()), ks([1, 2, 3, 4, 5, 256, 300]));
    assert_eq!(keys(t.iter().rev()), ks([300, 256, 5, 4, 3, 2, 1]));
    assert_eq!(keys(t.range(k(2)..k(5))), ks([2, 3, 4]));
    assert_eq!(keys(t.range(k(2)..=k(5))), ks([2, 3, 4, 5]));
    assert_eq!(keys(t.range(..k(3))), ks([1, 2]));
    assert_eq!(keys(t.range(k(5)..)), ks([5, 256, 300]));
    assert_eq!(keys(t.range(k(3)..k(256)).rev()), ks([5, 4, 3]));
    assert_eq!(
        keys(t.range::<[u8; 8], _>((Bound::Excluded(k(3)), Bound::Excluded(k(256))))),
        ks([4, 5])
    );
    assert_eq!(keys(t.iter_from(k(6))), ks([256, 300]));
    // Empty and inverted ranges are empty, not a panic.
    assert!(keys(t.range(k(3)..k(3))).is_empty());
    assert!(keys(t.range(k(9)..k(3))).is_empty());
    assert!(keys(t.range(k(9)..=k(3))).is_empty());
    assert!(keys(t.range::<[u8; 8], _>((Bound::Excluded(k(3)), Bound::Excluded(k(3))))).is_empty());
    assert!(keys(t.range(k(1000)..)).is_empty());
    let (first, v) = t.first().unwrap().unwrap();
    assert_eq!((first, v), (k(1).to_vec(), b"1".to_vec()));
    let (last, v) = t.last().unwrap().unwrap();
    assert_eq!((last, v), (k(300).to_vec(), b"300".to_vec()));
    // Both ends of one iterator meet in the middle.
    let mut it = t.range(k(1)..=k(5));
    assert_eq!(it.next().unwrap().unwrap().0, k(1));
    assert_eq!(it.next_back().unwrap().unwrap().0, k(5));
    assert_eq!(keys(it), ks([2, 3, 4]));
    // Variable-length keys order by bytes.
    let b = store.tree("bytes").unwrap();
    for key in [&b"b"[..], b"ab", b"a", b"\xff", b"\x00\x01"] {
        b.insert(key, b"").unwrap();
    }
    assert_eq!(
        keys(b.iter()),
        vec![
            b"\x00\x01".to_vec(),
            b"a".to_vec(),
            b"ab".to_vec(),
            b"b".to_vec(),
            b"\xff".to_vec()
        ]
    );
    // The iterator owns its handle: it can move to another thread.
    let it = t.iter();
    let n = std::thread::spawn(move || it.count()).join().unwrap();
    assert_eq!(n, 7);
}

fn batch(store: &dyn MetaStore) {
    let t = store.tree("b").unwrap();
    t.insert(b"gone", b"x").unwrap();
    t.insert(b"keep", b"x").unwrap();
    let mut b = Batch::new();
    b.insert(b"a".to_vec(), b"1".to_vec())
        .insert(b"c".to_vec(), b"3".to_vec())
        .remove(b"gone".to_vec())
        .insert(b"a".to_vec(), b"2".to_vec())
        .insert(b"d".to_vec(), b"4".to_vec())
        .remove(b"d".to_vec());
    b.put_record(b"rec".to_vec(), &42u64).unwrap();
    assert_eq!(b.len(), 7);
    t.apply_batch(b).unwrap();
    assert_eq!(
        keys(t.iter()),
        vec![
            b"a".to_vec(),
            b"c".to_vec(),
            b"keep".to_vec(),
            b"rec".to_vec()
        ]
    );
    assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(t.get_record::<u64>(b"rec").unwrap(), Some(42));
    t.apply_batch(Batch::new()).unwrap();
    assert_eq!(t.len().unwrap(), 4);
}

fn remove_range(store: &dyn MetaStore) {
    let t = store.tree("log").unwrap();
    let mut b = Batch::new();
    for i in 1..=5000u64 {
        b.insert(k(i), vec![0u8; 16]);
    }
    t.apply_batch(b).unwrap();
    // Purge a prefix.
    assert_eq!(t.remove_range(..=k(2999)).unwrap(), 2999);
    assert_eq!(t.first().unwrap().unwrap().0, k(3000));
    // Truncate a suffix.
    assert_eq!(t.remove_range(k(4500)..).unwrap(), 501);
    assert_eq!(t.last().unwrap().unwrap().0, k(4499));
    assert_eq!(t.len().unwrap(), 1500);
    assert_eq!(t.remove_range(k(1)..k(10)).unwrap(), 0);
    assert_eq!(t.remove_range(k(10)..k(1)).unwrap(), 0);
    assert_eq!(t.remove_range(k(3000)..k(3010)).unwrap(), 10);
    assert_eq!(t.first().unwrap().unwrap().0, k(3010));
}

fn records(store: &dyn MetaStore) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Vote {
        term: u64,
        node: Option<u64>,
        committed: bool,
    }
    let t = store.tree("raft_state").unwrap();
    let vote = Vote {
        term: 3,
        node: Some(2),
        committed: true,
    };
    t.put_record(b"vote", &vote).unwrap();
    assert_eq!(t.get_record::<Vote>(b"vote").unwrap(), Some(vote));
    assert_eq!(t.get_record::<Vote>(b"none").unwrap(), None);
    // A torn value is reported with the tree and the key, not decoded.
    let good = t.get(b"vote").unwrap().unwrap();
    t.insert(b"torn", &good[..good.len() - 2]).unwrap();
    let err = t.get_record::<Vote>(b"torn").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("raft_state") && msg.contains(&error::hex(b"torn")),
        "{msg}"
    );
    let report = t.scan_check().unwrap();
    assert_eq!(report.ok, 1);
    assert_eq!(report.bad.len(), 1);
    assert_eq!(report.bad[0].0, b"torn".to_vec());
}

fn flush(store: &dyn MetaStore) {
    let t = store.tree("f").unwrap();
    t.insert(b"k", b"v").unwrap();
    t.flush().unwrap();
    store.flush().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        t.flush_async().await.unwrap();
        store.flush_async().await.unwrap();
    });
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(#[test]
            fn $case() {
                super::$case(&crate::store::MemStore::new());
            })*
        }
        mod sled {
            $(#[test]
            fn $case() {
                let tmp = tempfile::tempdir().unwrap();
                let store = crate::store::SledStore::open(&tmp.path().join("db")).unwrap();
                super::$case(&store);
            })*
        }
    };
}

suite!(
    insert_get_remove,
    ordered_range,
    batch,
    remove_range,
    records,
    flush
);

#[test]
fn sled_data_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        let log = store.tree("log").unwrap();
        let mut b = Batch::new();
        for i in 1..=100u64 {
            b.put_record(k(i), &format!("entry {i}")).unwrap();
        }
        log.apply_batch(b).unwrap();
        log.remove_range(..k(11)).unwrap();
        store
            .tree("meta")
            .unwrap()
            .put_record(b"vote", &(7u64, 1u64))
            .unwrap();
        store.flush().unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    let log = store.tree("log").unwrap();
    assert_eq!(log.len().unwrap(), 90);
    let (key, value) = log.first().unwrap().unwrap();
    assert_eq!(key, k(11));
    assert_eq!(
        log.decode_record::<String>(&key, &value).unwrap(),
        "entry 11"
    );
    assert_eq!(log.last().unwrap().unwrap().0, k(100));
    let vote = store
        .tree("meta")
        .unwrap()
        .get_record::<(u64, u64)>(b"vote")
        .unwrap();
    assert_eq!(vote, Some((7, 1)));
    assert_eq!(
        store.tree_names().unwrap(),
        vec!["log".to_string(), "meta".to_string()]
    );
    assert_eq!(log.scan_check().unwrap().bad, vec![]);
}

#[test]
fn sled_open_error_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SledStore::open(&file.join("db")).err().unwrap();
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn store_error_maps_to_io_error() {
    let e: std::io::Error = StoreError::corrupt("t", b"k", RecordError::Empty).into();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("tree \"t\""), "{e}");
}
