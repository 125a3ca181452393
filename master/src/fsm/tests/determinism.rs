//! Determinism, images, and exactly-once sessions.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random log: a few sessions (registered, some closed or expired), and
/// operations on inode numbers in a small range, mostly valid-looking.
fn random_log(seed: u64, n: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::with_capacity(n);
    // The generator knows the ids the state machine will hand out (1, 2, ...).
    let mut seqs: Vec<u64> = vec![0; 1];
    let mut live: Vec<usize> = Vec::new();
    // The log applied so far: write-back creates use the numbers the
    // session holds there (most of the time).
    let mut sim = Namespace::new();
    let internal = |op: Op, t: i64| Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(t),
        op,
    };
    log.push(internal(Op::SetClusterId { id: "c1".into() }, 1));
    for k in 0..3 {
        let op = if k == 2 {
            Op::RegisterSessionWith {
                info: "m".into(),
                rights: exported(),
            }
        } else {
            Op::RegisterSession { info: "m".into() }
        };
        log.push(internal(op, 1));
        live.push(seqs.len());
        seqs.push(0);
    }
    let names: [&[u8]; 6] = [b"a", b"b", b"c", b"d", b"", b".."];
    for r in &log {
        sim.apply(r);
    }
    for i in 0..n {
        let t = 2 + i as i64;
        let c = if rng.random_bool(0.7) {
            root()
        } else {
            user(1000)
        };
        let ino = |rng: &mut StdRng| {
            Inode(if rng.random_bool(0.3) {
                1
            } else {
                rng.random_range(1..40)
            })
        };
        let p = ino(&mut rng);
        let name = names[rng.random_range(0..names.len())].to_vec();
        let name2 = names[rng.random_range(0..names.len())].to_vec();
        let fresh = format!("w{}", rng.random_range(0..100)).into_bytes();
        let index = rng.random_range(0..4u32);
        let chunk = ChunkId(rng.random_range(1..20));
        let opener = c.clone();
        let op = match rng.random_range(0..266) {
            0..40 => mkdir(&c, p, &name, 0o777),
            40..70 => Op::Create {
                cred: c,
                parent: p,
                name,
                mode: 0o666,
                umask: 0o022,
                exclusive: rng.random_bool(0.5),
            },
            70..80 => symlink(&c, p, &name, b"t"),
            80..100 => unlink(&c, p, &name),
            100..110 => rmdir(&c, p, &name),
            110..130 => rename_flags(
                rename(&c, p, &name, ino(&mut rng), &name2),
                rng.random_bool(0.2),
                rng.random_bool(0.2),
            ),
            130..140 => link(&c, p, ino(&mut rng), &name2),
            140..150 => chmod(&c, p, 0o1777),
            150..160 => truncate(&c, p, rng.random_range(0..1 << 30)),
            160..170 => setxattr(&c, p, "user.k", &name),
            170..177 => Op::Release { inode: p },
            177..179 => Op::ReleaseMany {
                inodes: vec![p, Inode::ROOT, p],
            },
            179 => Op::AssertOpens {
                opens: vec![(p, rng.random_range(0..3)), (Inode::ROOT, 1)],
            },
            180..190 => open(&c, p, OpenMode::ReadWrite, rng.random_bool(0.3)),
            190..195 => utimens(&c, p, Some(TimeSet::Now), Some(TimeSet::At(ts(5)))),
            195 => Op::CloseSession,
            196 => Op::ExpireSessions {
                ids: vec![SessionId(rng.random_range(1..seqs.len() as u64))],
            },
            200..208 => Op::AllocChunk { inode: p, index },
            208..214 => Op::WriteChunk {
                cred: c,
                inode: p,
                index,
                chunk,
                version: ChunkVersion(rng.random_range(1..4)),
            },
            214..220 => Op::WriteChunkEnd {
                inode: p,
                index,
                chunk,
                length: rng.random_range(0..5 * CHUNK_SIZE),
            },
            220..223 => Op::SetChunkVersion {
                chunk,
                version: ChunkVersion(rng.random_range(1..6)),
            },
            223..225 => Op::ChunksDeleted { ids: vec![chunk] },
            225..228 => Op::SetGoal {
                cred: c,
                inode: p,
                goal: rng.random_range(0..4),
                recursive: rng.random_bool(0.5),
            },
            228..230 => Op::SetTrashTime {
                cred: c,
                inode: p,
                trash_time: rng.random_range(0..3),
                recursive: rng.random_bool(0.5),
            },
            197..200 => Op::RegisterSession {
                info: "again".into(),
            },
            230..236 => Op::Delegate {
                dir: p,
                inodes: rng.random_range(0..12),
            },
            236..238 => Op::Undelegate {
                dir: p,
                holder: SessionId(rng.random_range(1..seqs.len() as u64)),
            },
            238..241 => create_at(&c, Inode::ROOT, &fresh, Inode(0), t),
            241..245 => Op::Batch {
                ops: vec![
                    create_at(&c, p, &fresh, Inode(0), t),
                    rename(&c, p, &name, p, &name2),
                    unlink(&c, p, &name2),
                    rmdir(&c, p, &name),
                    Op::Release { inode: p },
                ],
            },
            245..247 => Op::HoldChunks {
                count: rng.random_range(0..4),
                give_back: vec![chunk],
            },
            247..250 => Op::Batch {
                ops: vec![
                    create_at(&c, p, &fresh, Inode(0), t),
                    Op::AttachChunk {
                        cred: c.clone(),
                        inode: Inode(0),
                        index,
                        chunk: ChunkId(0),
                    },
                    Op::WriteChunkEndTimed {
                        inode: Inode(0),
                        index,
                        chunk: ChunkId(0),
                        length: rng.random_range(0..5 * CHUNK_SIZE),
                        mtime: None,
                        ctime: ts(t),
                    },
                    Op::Open {
                        cred: c.clone(),
                        inode: Inode(0),
                        mode: OpenMode::Read,
                        truncate: false,
                    },
                ],
            },
            250..254 => Op::Opens { opens: Vec::new() },
            254..258 => Op::Batch {
                ops: vec![Op::MkdirAt(MakeAt {
                    cred: c,
                    parent: p,
                    name: fresh.clone(),
                    mode: 0o755,
                    umask: 0o022,
                    inode: Inode(0),
                    time: ts(t),
                })],
            },
            258..262 => Op::OpenLeased {
                cred: c,
                inode: p,
                mode: OpenMode::ReadWrite,
                chunk: ChunkId(rng.random_range(1..40)),
                version: ChunkVersion(1),
            },
            262..266 => Op::WriteChunkEndUnmade {
                end: Box::new(Op::WriteChunkEnd {
                    inode: p,
                    index,
                    chunk,
                    length: rng.random_range(0..5 * CHUNK_SIZE),
                }),
            },
            _ => unreachable!("range"),
        };
        if let Op::ExpireSessions { ids } = &op {
            live.retain(|&s| s as u64 != ids[0].0);
        }
        if matches!(op, Op::RegisterSession { .. }) {
            live.push(seqs.len());
            seqs.push(0);
        }
        // Write-back creates mostly come from a session holding numbers.
        let holder = live
            .iter()
            .copied()
            .find(|&x| sim.reserved.contains_key(&SessionId(x as u64)));
        let creates = matches!(
            op,
            Op::CreateAt(_) | Op::Batch { .. } | Op::HoldChunks { .. }
        );
        // Mostly live sessions, sometimes none or a dead one.
        let s = match rng.random_range(0..20) {
            _ if creates && holder.is_some() && rng.random_bool(0.8) => holder.unwrap_or(0),
            0..3 => 0,
            3 => rng.random_range(1..seqs.len()),
            _ if live.is_empty() => 0,
            _ => live[rng.random_range(0..live.len())],
        };
        let mut op = op;
        let held = sim
            .reserved
            .get(&SessionId(s as u64))
            .and_then(|r| r.first());
        let pick = held
            .filter(|_| rng.random_bool(0.9))
            .map_or(rng.random_range(1..60), |r| r.0);
        fill_held(&mut op, Inode(pick));
        // Chunk ids it holds, mostly.
        let own = sim
            .held_chunks
            .get(&SessionId(s as u64))
            .and_then(|h| h.first().copied())
            .filter(|_| rng.random_bool(0.9))
            .unwrap_or(chunk);
        fill_chunk(&mut op, own, Inode(pick));
        // Opens answered early, of live sessions (a truncating one is
        // refused in its place).
        if let Op::Opens { opens } = &mut op {
            for _ in 0..rng.random_range(1..5) {
                let Some(&o) = live.get(rng.random_range(0..live.len().max(1))) else {
                    break;
                };
                seqs[o] += 1;
                opens.push(Request {
                    session: SessionId(o as u64),
                    seq: seqs[o],
                    acked: seqs[o] - 1,
                    time: ts(t),
                    op: open(&opener, ino(&mut rng), OpenMode::Read, rng.random_bool(0.1)),
                });
            }
        }
        if s == 0 || op.is_internal() || matches!(op, Op::RegisterSession { .. }) {
            log.push(internal(op, t));
        } else {
            if op == Op::CloseSession {
                live.retain(|&x| x != s);
            }
            seqs[s] += 1;
            let lag = rng.random_range(0..4);
            log.push(Request {
                session: SessionId(s as u64),
                seq: seqs[s],
                acked: seqs[s].saturating_sub(1 + lag),
                time: ts(t),
                op,
            });
        }
        if let Some(r) = log.last() {
            sim.apply(r);
        }
    }
    log
}

/// Gives the write-back creates in `op` (inode 0) the number `ino`.
fn fill_held(op: &mut Op, ino: Inode) {
    match op {
        Op::CreateAt(m) | Op::MkdirAt(m) if m.inode.0 == 0 => m.inode = ino,
        Op::Open { inode, .. } if inode.0 == 0 => *inode = ino,
        Op::Batch { ops } => ops.iter_mut().for_each(|o| fill_held(o, ino)),
        _ => {}
    }
}

/// Gives the attaches in `op` (chunk 0) the id `id`, in the file `ino`.
fn fill_chunk(op: &mut Op, id: ChunkId, ino: Inode) {
    match op {
        Op::AttachChunk { chunk, inode, .. } if chunk.0 == 0 => {
            *chunk = id;
            *inode = ino;
        }
        Op::WriteChunkEndTimed { chunk, inode, .. } if chunk.0 == 0 => {
            *chunk = id;
            *inode = ino;
        }
        Op::Batch { ops } => ops.iter_mut().for_each(|o| fill_chunk(o, id, ino)),
        _ => {}
    }
}

fn replay(log: &[Request]) -> Namespace {
    let mut ns = Namespace::new();
    for r in log {
        ns.apply(r);
    }
    ns
}

#[test]
fn same_log_same_image() {
    for seed in 0..4 {
        let log = random_log(seed, 3000);
        let a = replay(&log);
        let b = replay(&log);
        eprintln!("INODES {}", a.inode_count());
        assert!(a.inode_count() > 10, "the log should build something");
        assert!(
            a.next_chunk_id().0 > 5,
            "the log should allocate chunks too"
        );
        a.check().expect("invariants");
        // Write-back ops take effect too, not only their refusals.
        let mut ns = Namespace::new();
        let (mut delegated, mut made, mut attached, mut opened) = (0, 0, 0, 0);
        let mut ended = 0;
        for r in &log {
            let reply = ns.apply(r);
            match (&r.op, reply) {
                (Op::Delegate { .. }, Reply::Delegated { .. }) => delegated += 1,
                (Op::CreateAt(_), Reply::Attr(_)) => made += 1,
                (Op::Opens { .. }, Reply::Batch(e)) => {
                    opened += e.iter().filter(|&&e| e == 0).count()
                }
                (Op::Batch { ops }, Reply::Batch(e)) => {
                    for (o, e) in ops.iter().zip(e) {
                        match o {
                            Op::CreateAt(_) | Op::MkdirAt(_) if e == 0 => made += 1,
                            Op::AttachChunk { .. } if e == 0 => attached += 1,
                            Op::WriteChunkEndTimed { .. } if e == 0 => ended += 1,
                            Op::Open { .. } if e == 0 => opened += 1,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(
            delegated > 0 && made > 0 && attached > 0 && opened > 0 && ended > 0,
            "{delegated} delegations, {made} creates, {attached} held chunks attached, {opened} opens logged together or queued, {ended} timed commits"
        );
        assert_eq!(a.to_image(b"e"), b.to_image(b"e"));
        assert_eq!(a.image_hash(), b.image_hash());
    }
}

#[test]
fn snapshot_then_rest_equals_whole_log() {
    let log = random_log(7, 2000);
    let whole = replay(&log).to_image(b"");
    for k in [0, 1, 4, 500, 1000, 1999, 2004] {
        let image = replay(&log[..k]).to_image(b"extra");
        let (mut ns, extra) = Namespace::from_image(&image).expect("image loads");
        assert_eq!(extra, b"extra");
        for r in &log[k..] {
            ns.apply(r);
        }
        assert_eq!(ns.to_image(b""), whole, "snapshot at {k}");
    }
}

#[test]
fn retrying_every_request_changes_nothing() {
    let log = random_log(11, 2000);
    let once = replay(&log);
    let mut twice = Namespace::new();
    for r in &log {
        let first = twice.apply(r);
        if r.session != SessionId(0) && r.op != Op::CloseSession {
            let again = twice.apply(r);
            // A retry of a request whose session is gone fails; else same answer.
            if again != Reply::Err(Errno::UNKNOWN_SESSION) {
                assert_eq!(first, again, "{r:?}");
            }
        }
    }
    assert_eq!(once.to_image(b""), twice.to_image(b""));
}

// ---- exactly once -------------------------------------------------------------

#[test]
fn duplicate_request_gets_the_first_reply() {
    let mut h = H::new();
    let req = h.next_req(create(&root(), Inode::ROOT, "f", 0o644));
    let first = h.ns.apply(&req);
    assert!(matches!(first, Reply::Attr(_)));
    let image = h.ns.to_image(b"");
    assert_eq!(h.ns.apply(&req), first);
    assert_eq!(h.ns.to_image(b""), image, "a duplicate changed the state");
    // An error reply is remembered too.
    let req = h.next_req(mkdir(&root(), Inode::ROOT, "f", 0o755));
    assert_eq!(h.ns.apply(&req), Reply::Err(Errno::EEXIST));
    // The client has not yet seen that reply (acked stays below it).
    let mut rm = h.next_req(unlink(&root(), Inode::ROOT, "f"));
    rm.acked = req.seq - 1;
    assert_eq!(h.ns.apply(&rm), Reply::Ok);
    assert_eq!(
        h.ns.apply(&req),
        Reply::Err(Errno::EEXIST),
        "retry re-applied"
    );
    assert!(h.lookup(Inode::ROOT, "f").is_err());
}

#[test]
fn acked_replies_are_pruned_and_stale_refused() {
    let mut h = H::new();
    let sid = h.sid;
    let mk = |seq: u64, acked: u64, name: &str| Request {
        session: sid,
        seq,
        acked,
        time: ts(2000 + seq as i64),
        op: mkdir(&root(), Inode::ROOT, name, 0o755),
    };
    let mut replies = Vec::new();
    for seq in 1..=5 {
        replies.push(h.ns.apply(&mk(seq, 0, &format!("d{seq}"))));
    }
    assert_eq!(h.ns.sessions()[0].cached_replies, 5);
    h.ns.apply(&mk(6, 4, "d6"));
    assert_eq!(
        h.ns.sessions()[0].cached_replies,
        2,
        "replies 1..=4 dropped"
    );
    let before = h.ns.image_hash();
    assert_eq!(h.ns.apply(&mk(3, 0, "d3")), Reply::Err(Errno::STALE_SEQ));
    assert_eq!(h.ns.apply(&mk(5, 0, "d5")), replies[4]);
    assert_eq!(h.ns.image_hash(), before);
    // seq 0 is never valid for a session.
    assert_eq!(h.ns.apply(&mk(0, 0, "z")), Reply::Err(Errno::STALE_SEQ));
    // A client cannot acknowledge the request it is sending.
    let r = h.ns.apply(&mk(7, 100, "d7"));
    assert_eq!(h.ns.apply(&mk(7, 100, "d7")), r);
}

#[test]
fn reply_cache_is_bounded() {
    let mut h = H::new();
    let sid = h.sid;
    for seq in 1..=(MAX_CACHED_REPLIES as u64 + 10) {
        h.ns.apply(&Request {
            session: sid,
            seq,
            acked: 0,
            time: ts(5000),
            op: Op::Release { inode: Inode(99) },
        });
    }
    assert_eq!(h.ns.sessions()[0].cached_replies, MAX_CACHED_REPLIES);
    let old = Request {
        session: sid,
        seq: 3,
        acked: 0,
        time: ts(5000),
        op: Op::Release { inode: Inode(99) },
    };
    assert_eq!(h.ns.apply(&old), Reply::Err(Errno::STALE_SEQ));
    h.ns.check().expect("invariants");
}

#[test]
fn unknown_session_and_internal_ops() {
    let mut h = H::new();
    let before = h.ns.image_hash();
    let req = Request {
        session: SessionId(77),
        seq: 1,
        acked: 0,
        time: ts(1),
        op: mkdir(&root(), Inode::ROOT, "x", 0o755),
    };
    assert_eq!(h.ns.apply(&req), Reply::Err(Errno::UNKNOWN_SESSION));
    assert_eq!(h.ns.image_hash(), before);
    assert_eq!(Errno::UNKNOWN_SESSION.to_string(), "ESTALE");
    assert_eq!(Errno::STALE_SEQ.to_string(), "EBADR");
    // Internal operations are refused from a client session.
    let e = h.err(Op::ExpireSessions { ids: vec![h.sid] });
    assert_eq!(e, Errno::EPERM);
    assert_eq!(h.err(Op::SetClusterId { id: "other".into() }), Errno::EPERM);
    // Closing without a session.
    let r = h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(1),
        op: Op::CloseSession,
    });
    assert_eq!(r, Reply::Err(Errno::UNKNOWN_SESSION));
}

#[test]
fn sessions_register_close_expire() {
    let mut h = H::new();
    assert_eq!(h.sid, SessionId(1));
    let reg = |ns: &mut Namespace| match ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(3000),
        op: Op::RegisterSession { info: "two".into() },
    }) {
        Reply::Session { id } => id,
        r => panic!("{r:?}"),
    };
    let s2 = reg(&mut h.ns);
    assert_eq!(s2, SessionId(2));
    let list = h.ns.sessions();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].info, "two");
    assert_eq!(list[1].last_seen, ts(3000));
    h.ok(Op::CloseSession);
    assert_eq!(
        h.run(mkdir(&root(), Inode::ROOT, "x", 0o755)),
        Reply::Err(Errno::UNKNOWN_SESSION)
    );
    h.ns.apply(&Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: ts(4000),
        op: Op::ExpireSessions {
            ids: vec![s2, SessionId(99)],
        },
    });
    assert!(h.ns.sessions().is_empty());
    assert_eq!(reg(&mut h.ns), SessionId(3), "ids are never reused");
}

#[test]
fn cluster_id_is_set_once() {
    let mut ns = Namespace::new();
    let set = |ns: &mut Namespace, id: &str| {
        ns.apply(&Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: ts(10),
            op: Op::SetClusterId { id: id.into() },
        })
    };
    assert_eq!(ns.cluster_id(), None);
    assert_eq!(set(&mut ns, ""), Reply::Err(Errno::EINVAL));
    assert_eq!(set(&mut ns, "abc"), Reply::Ok);
    assert_eq!(ns.getattr(Inode::ROOT).map(|a| a.ctime), Ok(ts(10)));
    assert_eq!(set(&mut ns, "abc"), Reply::Ok);
    assert_eq!(set(&mut ns, "xyz"), Reply::Err(Errno::EINVAL));
    assert_eq!(ns.cluster_id(), Some("abc"));
}

// ---- images ---------------------------------------------------------------------

fn small_image() -> (Namespace, Vec<u8>) {
    let ns = replay(&random_log(3, 150));
    let image = ns.to_image(b"raft");
    (ns, image)
}

#[test]
fn image_round_trip() {
    let (ns, image) = small_image();
    assert_eq!(&image[..8], IMAGE_MAGIC);
    let (back, extra) = Namespace::from_image(&image).expect("loads");
    assert_eq!(back, ns);
    assert_eq!(extra, b"raft");
    assert_eq!(back.image_hash(), ns.image_hash());
}

#[test]
fn every_flipped_byte_is_refused() {
    let (_, image) = small_image();
    for i in 0..image.len() {
        let mut bad = image.clone();
        bad[i] ^= 0x5a;
        let r = Namespace::from_image(&bad);
        assert!(r.is_err(), "flipped byte {i} of {} accepted", image.len());
    }
    let mut bad = image.clone();
    bad[0] ^= 1;
    assert_eq!(
        Namespace::from_image(&bad).err(),
        Some(ImageError::BadMagic)
    );
    let mut bad = image.clone();
    bad[8] = 10;
    assert_eq!(
        Namespace::from_image(&bad).err(),
        Some(ImageError::Version { found: 10 })
    );
    let mut bad = image.clone();
    bad[30] ^= 1;
    assert!(matches!(
        Namespace::from_image(&bad),
        Err(ImageError::Checksum { .. })
    ));
}

#[test]
fn every_truncation_is_refused() {
    let (_, image) = small_image();
    for len in 0..image.len() {
        assert!(
            Namespace::from_image(&image[..len]).is_err(),
            "truncated to {len} accepted"
        );
    }
    let mut longer = image.clone();
    longer.push(0);
    assert!(Namespace::from_image(&longer).is_err());
}

/// Frame `payload` as an image with a valid checksum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = IMAGE_MAGIC.to_vec();
    out.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn garbage_with_a_valid_checksum_is_refused() {
    assert!(matches!(
        Namespace::from_image(&frame(&[0xff; 40])),
        Err(ImageError::Decode(_))
    ));
    // A huge claimed string length must not allocate or panic.
    let mut p = vec![1u8];
    p.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Namespace::from_image(&frame(&p)).is_err());
}

#[test]
fn inconsistent_namespace_is_refused() {
    let (mut ns, _) = small_image();
    if let Some(root) = ns.nodes.get_mut(&Inode::ROOT) {
        root.nlink += 1;
    }
    let image = ns.to_image(b"");
    assert!(matches!(
        Namespace::from_image(&image),
        Err(ImageError::Inconsistent(_))
    ));
}

/// A write-back create (`Op::CreateAt`) at the mount's time `sec`.
fn create_at(c: &Cred, parent: Inode, name: &[u8], inode: Inode, sec: i64) -> Op {
    Op::CreateAt(MakeAt {
        cred: c.clone(),
        parent,
        name: name.to_vec(),
        mode: 0o644,
        umask: 0o022,
        inode,
        time: ts(sec),
    })
}

/// Log entries are bincode, an op by its variant's index: a master must
/// read the entries older ones wrote, so each variant keeps its index
/// (new ones go last).
#[test]
fn op_variant_indices_are_pinned() {
    let c = root();
    let t = ts(5);
    let pinned: Vec<(u8, Op)> = vec![
        (0, Op::RegisterSession { info: "x".into() }),
        (1, Op::CloseSession),
        (
            41,
            Op::Delegate {
                dir: Inode(1),
                inodes: 1,
            },
        ),
        (
            42,
            Op::Undelegate {
                dir: Inode(1),
                holder: SessionId(1),
            },
        ),
        (43, create_at(&c, Inode(1), b"f", Inode(9), 5)),
        (44, Op::Batch { ops: Vec::new() }),
        (
            45,
            Op::HoldChunks {
                count: 1,
                give_back: Vec::new(),
            },
        ),
        (
            46,
            Op::AttachChunk {
                cred: c.clone(),
                inode: Inode(9),
                index: 0,
                chunk: ChunkId(1),
            },
        ),
        (47, Op::Opens { opens: Vec::new() }),
        (
            48,
            Op::MkdirAt(MakeAt {
                cred: c.clone(),
                parent: Inode(1),
                name: b"d".to_vec(),
                mode: 0o755,
                umask: 0,
                inode: Inode(9),
                time: t,
            }),
        ),
        (
            49,
            Op::WriteChunkEndTimed {
                inode: Inode(9),
                index: 0,
                chunk: ChunkId(1),
                length: 1,
                mtime: Some(t),
                ctime: t,
            },
        ),
        (
            50,
            Op::OpenLeased {
                cred: c.clone(),
                inode: Inode(9),
                mode: OpenMode::Write,
                chunk: ChunkId(1),
                version: ChunkVersion(1),
            },
        ),
        (
            51,
            Op::WriteChunkEndUnmade {
                end: Box::new(Op::ChunksDeleted { ids: Vec::new() }),
            },
        ),
        (
            52,
            Op::OrderChunkVersion {
                chunk: ChunkId(1),
                version: ChunkVersion(2),
            },
        ),
        (
            53,
            Op::SetAttrAt {
                cred: c.clone(),
                inode: Inode(9),
                mode: None,
                uid: None,
                gid: None,
                atime: None,
                mtime: Some(TimeSet::Now),
                time: ts(5),
            },
        ),
        (
            54,
            Op::WriteChunkEndWithTimed {
                cred: c,
                inode: Inode(9),
                index: 0,
                chunk: ChunkId(1),
                length: 1,
                mtime: None,
                mode: None,
                atime: None,
                ctime: ts(5),
            },
        ),
    ];
    for (index, op) in pinned {
        let bytes = bincode::serde::encode_to_vec(&op, bincode::config::standard()).unwrap();
        assert_eq!(bytes[0], index, "{} moved", op.name());
    }
}

/// `CreateAt` and `MkdirAt` entries as masters have written them, byte
/// for byte (their fields are one struct now, encoded the same).
#[test]
fn make_at_entries_keep_their_encoding() {
    let c = Cred {
        uid: 5,
        gid: 6,
        groups: vec![7],
    };
    let create = Op::CreateAt(MakeAt {
        cred: c.clone(),
        parent: Inode(1),
        name: b"f".to_vec(),
        mode: 0o644,
        umask: 0o22,
        inode: Inode(9),
        time: ts(3),
    });
    let mkdir = Op::MkdirAt(MakeAt {
        cred: c,
        parent: Inode(1),
        name: b"d".to_vec(),
        mode: 0o755,
        umask: 0o22,
        inode: Inode(10),
        time: ts(4),
    });
    let bytes = |op: &Op| bincode::serde::encode_to_vec(op, bincode::config::standard()).unwrap();
    let create_bytes = [43, 5, 6, 1, 7, 1, 1, 102, 251, 164, 1, 18, 9, 6, 0];
    let mkdir_bytes = [48, 5, 6, 1, 7, 1, 1, 100, 251, 237, 1, 18, 10, 8, 0];
    assert_eq!(bytes(&create), create_bytes);
    assert_eq!(bytes(&mkdir), mkdir_bytes);
}
