//! The receiving side of Raft traffic: our `RaftService` gRPC service handing
//! messages to the local openraft node.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use mfs_proto::v1::raft_service_server::RaftService;
use mfs_proto::v1::{RaftPayload, SnapshotPiece};
use tonic::{Request, Response, Status, Streaming};

use super::identity::Identity;
use super::types::*;

/// Largest snapshot accepted (bytes); a bigger stream is refused.
const MAX_SNAPSHOT: usize = 16 << 30;

pub struct RaftGrpc {
    pub raft: Raft,
    pub ident: Arc<Identity>,
}

fn bad(what: &str, e: String) -> Status {
    Status::invalid_argument(format!("malformed {what} message: {e}"))
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let data = codec::encode(v).map_err(Status::internal)?;
    Ok(Response::new(RaftPayload { data }))
}

/// The replies of an `AppendStream` call.
pub type AppendReplies = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    type AppendStreamStream = AppendReplies;

    /// Each request goes to openraft as it comes (pipelined); the replies
    /// go back in order. A request that does not decode ends the call with
    /// INVALID_ARGUMENT after the replies to those before it; a conflict or
    /// a higher vote is the last reply (openraft's stream ends there).
    async fn append_stream(
        &self,
        req: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<AppendReplies>, Status> {
        self.ident.check(req.metadata())?;
        let failed: Arc<Mutex<Option<Status>>> = Arc::default();
        let on_fail = failed.clone();
        let fail = move |s: Status| {
            *on_fail.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
            None
        };
        let requests = tokio_stream::StreamExt::map_while(req.into_inner(), move |m| match m {
            Ok(p) => match codec::decode::<AppendEntriesRequest>(&p.data) {
                Ok(r) => {
                    metrics::counter!("mfs_raft_append_requests_total").increment(1);
                    metrics::counter!("mfs_raft_append_entries_total")
                        .increment(r.entries.len() as u64);
                    Some(r)
                }
                Err(e) => fail(bad("append", e)),
            },
            // The sender went away or broke the call: nothing to answer.
            Err(s) => fail(s),
        });
        let replies = self.raft.stream_append(requests).map(|r| match r {
            Ok(res) => codec::encode(&res)
                .map(|data| RaftPayload { data })
                .map_err(Status::internal),
            Err(fatal) => Err(Status::unavailable(format!("raft: {fatal}"))),
        });
        let last = futures::stream::once(async move {
            failed.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|e| async move { e.map(Err) });
        Ok(Response::new(Box::pin(replies.chain(last))))
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.ident.check(req.metadata())?;
        let rpc: AppendEntriesRequest =
            codec::decode(&req.into_inner().data).map_err(|e| bad("append", e))?;
        let resp = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        reply(&resp)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.ident.check(req.metadata())?;
        let rpc: VoteRequest = codec::decode(&req.into_inner().data).map_err(|e| bad("vote", e))?;
        let resp = self
            .raft
            .vote(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.ident.check(req.metadata())?;
        let rpc: VoteRequest =
            codec::decode(&req.into_inner().data).map_err(|e| bad("pre-vote", e))?;
        let resp = self
            .raft
            .pre_vote(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        reply(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotPiece>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.ident.check(req.metadata())?;
        let mut stream = req.into_inner();
        let mut header: Option<(Vote, SnapshotMeta)> = None;
        let mut image = Vec::new();
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            if header.is_none() {
                header = Some(codec::decode(&piece.header).map_err(|e| bad("snapshot header", e))?);
            }
            if image.len() + piece.data.len() > MAX_SNAPSHOT {
                return Err(Status::invalid_argument(
                    "snapshot larger than 16 GiB refused",
                ));
            }
            image.extend_from_slice(&piece.data);
        }
        let Some((vote, meta)) = header else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        // Refuse an image that does not parse before handing it to Raft.
        crate::fsm::Namespace::from_image(&image)
            .map_err(|e| Status::invalid_argument(format!("snapshot image rejected: {e}")))?;
        tracing::info!(bytes = image.len(), last = ?meta.last_log_id, "installing snapshot from leader");
        let resp = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: image,
                },
            )
            .await
            .map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        reply(&resp)
    }
}
