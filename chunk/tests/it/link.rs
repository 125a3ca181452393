//! The master link against a fake ChunkRegistry: a follower that redirects
//! to the leader, a leader that records what it hears and can forget us.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mfs_chunk::master_link::{LinkConfig, MasterLink};
use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_registry_server::{ChunkRegistry, ChunkRegistryServer};
use mfs_proto::ClusterSecret;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
enum Event {
    Register(pb::RegisterChunkserverRequest),
    Report(pb::ChunkReport),
    Heartbeat(pb::ChunkserverHeartbeat),
}

#[derive(Default)]
struct Fake {
    /// Some: a follower redirecting there.
    leader: Option<String>,
    events: Arc<Mutex<Vec<Event>>>,
    forget: Arc<AtomicBool>,
    /// Asked on every call, as the masters do.
    secret: ClusterSecret,
}

impl Fake {
    fn check<T>(&self, r: &Request<T>) -> Result<(), Status> {
        self.secret.check(r.metadata(), "the fake master's")
    }
}

#[tonic::async_trait]
impl ChunkRegistry for Fake {
    async fn register(
        &self,
        r: Request<pb::RegisterChunkserverRequest>,
    ) -> Result<Response<pb::RegisterChunkserverReply>, Status> {
        self.check(&r)?;
        if let Some(l) = &self.leader {
            let mut s = Status::unavailable("not the leader");
            s.metadata_mut()
                .insert(mfs_proto::LEADER_KEY, l.parse().unwrap());
            return Err(s);
        }
        self.forget.store(false, Ordering::SeqCst);
        self.events
            .lock()
            .unwrap()
            .push(Event::Register(r.into_inner()));
        Ok(Response::new(pb::RegisterChunkserverReply { id: 17 }))
    }

    async fn report_chunks(
        &self,
        r: Request<pb::ChunkReport>,
    ) -> Result<Response<pb::ChunkReportReply>, Status> {
        self.check(&r)?;
        self.events
            .lock()
            .unwrap()
            .push(Event::Report(r.into_inner()));
        Ok(Response::new(pb::ChunkReportReply { known: true }))
    }

    async fn heartbeat(
        &self,
        r: Request<pb::ChunkserverHeartbeat>,
    ) -> Result<Response<pb::ChunkserverHeartbeatReply>, Status> {
        self.check(&r)?;
        let known = !self.forget.load(Ordering::SeqCst);
        self.events
            .lock()
            .unwrap()
            .push(Event::Heartbeat(r.into_inner()));
        Ok(Response::new(pb::ChunkserverHeartbeatReply { known }))
    }
}

async fn serve(f: Fake) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChunkRegistryServer::new(f))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    addr
}

async fn wait_for(events: &Arc<Mutex<Vec<Event>>>, what: &str, f: impl Fn(&[Event]) -> bool) {
    for _ in 0..200 {
        if f(&events.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", events.lock().unwrap());
}

#[tokio::test]
async fn registers_via_redirect_reports_heartbeats_and_re_registers() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let forget = Arc::new(AtomicBool::new(false));
    let secret = ClusterSecret::new("s3cret");
    let leader = serve(Fake {
        leader: None,
        events: events.clone(),
        forget: forget.clone(),
        secret: secret.clone(),
    })
    .await;
    let follower = serve(Fake {
        leader: Some(leader.clone()),
        secret: secret.clone(),
        ..Default::default()
    })
    .await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let disk = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = crate::store_on(disk.path());
    store.create(0x55, 2).unwrap();
    let id_file = data.path().join("chunkserver.id");
    let link = MasterLink::new(
        LinkConfig {
            masters: vec![dead, follower],
            advertise: "127.0.0.1:7777".into(),
            labels: vec!["ssd".into()],
            maintenance: false,
            id_file: id_file.clone(),
            secret,
        },
        store.clone(),
    );
    let task = tokio::spawn(link.run());

    wait_for(&events, "a heartbeat", |e| {
        e.iter().any(|e| matches!(e, Event::Heartbeat(_)))
    })
    .await;
    {
        let ev = events.lock().unwrap();
        let Event::Register(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.address, "127.0.0.1:7777");
        assert_eq!(r.previous_id, 0);
        assert_eq!(r.labels, vec!["ssd"]);
        assert_eq!(r.disks.len(), 1);
        let Event::Report(rep) = &ev[1] else {
            panic!("{ev:?}")
        };
        assert!(rep.first && rep.last);
        assert_eq!(rep.id, 17);
        assert_eq!(
            rep.chunks
                .iter()
                .map(|c| (c.chunk_id, c.version))
                .collect::<Vec<_>>(),
            vec![(0x55, 2)]
        );
        let Some(Event::Heartbeat(hb)) = ev.get(2) else {
            panic!("{ev:?}")
        };
        assert_eq!(hb.id, 17);
        assert!(hb.added.is_empty(), "the report covered the creation");
        assert!(hb.disks[0].total_bytes > 0);
        assert_eq!(hb.disks[0].chunks, 1);
    }
    assert_eq!(mfs_chunk::master_link::load_id(&id_file), 17);

    // A change is carried by the next heartbeat.
    store.create(0x66, 1).unwrap();
    store.delete(0x55, 2).unwrap();
    wait_for(&events, "a heartbeat with the changes", |e| {
        e.iter().any(|e| {
            matches!(e, Event::Heartbeat(h)
                if h.added.iter().any(|c| c.chunk_id == 0x66 && c.version == 1)
                && h.removed.iter().any(|c| c.chunk_id == 0x55 && c.version == 2))
        })
    })
    .await;

    // The leader forgets us: register again with the previous id.
    forget.store(true, Ordering::SeqCst);
    wait_for(&events, "a second registration", |e| {
        e.iter().filter(|e| matches!(e, Event::Register(_))).count() >= 2
    })
    .await;
    {
        let ev = events.lock().unwrap();
        let regs: Vec<&pb::RegisterChunkserverRequest> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Register(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(regs[1].previous_id, 17);
    }
    wait_for(&events, "a second full report", |e| {
        e.iter()
            .filter(|e| matches!(e, Event::Report(r) if r.last))
            .count()
            >= 2
    })
    .await;
    task.abort();
}

/// A chunkserver with another cluster secret than the masters' never
/// registers: the masters refuse it, it keeps asking.
#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let leader = serve(Fake {
        events: events.clone(),
        secret: ClusterSecret::new("s3cret"),
        ..Default::default()
    })
    .await;
    let disk = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = crate::store_on(disk.path());
    for secret in ["", "other"] {
        let link = MasterLink::new(
            LinkConfig {
                masters: vec![leader.clone()],
                advertise: "127.0.0.1:7778".into(),
                labels: vec![],
                maintenance: false,
                id_file: data.path().join("chunkserver.id"),
                secret: ClusterSecret::new(secret),
            },
            store.clone(),
        );
        let task = tokio::spawn(link.run());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        task.abort();
        assert!(
            events.lock().unwrap().is_empty(),
            "secret {secret:?} got in: {:?}",
            events.lock().unwrap()
        );
    }
}
