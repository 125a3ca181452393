//! MetaService's trash listing and quota calls (the rest of the trash
//! calls are plain log entries in `meta`).

use mfs_proto::v1 as pb;
use tonic::Response;

use super::convert::*;
use super::error::errno_status;
use super::meta::{Meta, R};
use crate::fsm::{self, Inode, Op, QuotaSetting, Reply, DEFAULT_GRACE};

impl Meta {
    /// ListRemoved: a page of trashed or sustained files.
    pub(super) async fn list_removed_files(
        &self,
        r: pb::ListRemovedRequest,
    ) -> R<pb::ListRemovedReply> {
        let limit = match r.limit {
            0 => 1000,
            n => n.min(100_000) as usize,
        };
        let files = self
            .read(|ns| {
                let files = ns.removed_files(r.sustained, Inode(r.after_inode), limit);
                Ok(files.iter().map(|f| removed_to_pb(f, ns)).collect())
            })
            .await?;
        Ok(Response::new(pb::ListRemovedReply { files }))
    }

    /// SetQuota: one log entry, then the quota as it is.
    pub(super) async fn set_dir_quota(
        &self,
        r: pb::SetQuotaRequest,
        caller: &super::access::Caller,
    ) -> R<pb::QuotaReply> {
        let inode = Inode(r.inode);
        let setting = (!r.delete).then(|| QuotaSetting {
            soft: limits_from_pb(r.soft),
            hard: limits_from_pb(r.hard),
            grace: if r.grace_secs == 0 {
                DEFAULT_GRACE
            } else {
                r.grace_secs
            },
        });
        let op = Op::SetQuota {
            cred: caller.cred(r.cred),
            inode,
            setting,
        };
        match self.mutate(r.id, op).await? {
            Reply::Err(e) => Err(errno_status(e)),
            _ => self.dir_quota(inode).await,
        }
    }

    /// GetQuota.
    pub(super) async fn dir_quota(&self, inode: Inode) -> R<pb::QuotaReply> {
        let q = self
            .read(|ns| {
                ns.node_exists(inode)?;
                Ok(ns
                    .quota(inode)
                    .map(|q| quota_to_pb(inode, ns.quota_path(inode), q)))
            })
            .await?;
        Ok(Response::new(pb::QuotaReply { quota: q }))
    }

    /// ListQuotas: those of directories the caller sees.
    pub(super) async fn all_quotas(
        &self,
        caller: &super::access::Caller,
    ) -> R<pb::ListQuotasReply> {
        let list = self
            .read(|ns| {
                let mut all = ns.quotas();
                all.retain(|(ino, _, _)| caller.sees(ns, &[*ino]).is_ok());
                Ok(all)
            })
            .await?;
        Ok(Response::new(pb::ListQuotasReply {
            quotas: list
                .into_iter()
                .map(|(ino, path, q)| quota_to_pb(ino, path, &q))
                .collect(),
        }))
    }
}

fn limits_from_pb(l: Option<pb::QuotaLimits>) -> fsm::Limits {
    let l = l.unwrap_or_default();
    fsm::Limits {
        inodes: l.inodes,
        length: l.length,
        size: l.size,
        realsize: l.realsize,
    }
}

fn limits_to_pb(l: &fsm::Limits) -> pb::QuotaLimits {
    pb::QuotaLimits {
        inodes: l.inodes,
        length: l.length,
        size: l.size,
        realsize: l.realsize,
    }
}

fn quota_to_pb(inode: Inode, path: Vec<u8>, q: &fsm::Quota) -> pb::QuotaInfo {
    pb::QuotaInfo {
        inode: inode.0,
        path,
        soft: Some(limits_to_pb(&q.soft)),
        hard: Some(limits_to_pb(&q.hard)),
        grace_secs: q.grace,
        usage: Some(pb::QuotaUsage {
            inodes: q.usage.inodes,
            length: q.usage.length,
            size: q.usage.size,
            realsize: q.usage.realsize,
        }),
        soft_exceeded_since: q.soft_since.unwrap_or(0),
    }
}
