//! The trash calls of the meta mount (`mfsmount -m`): list trashed and
//! sustained files, undelete, set the path to restore to, remove for good;
//! and the quota calls of the tools and mfscli.

use mfs_proto::v1::{
    Attr, Credentials, DirInfoReply, DirInfoRequest, GetQuotaRequest, ListQuotasRequest,
    ListRemovedRequest, QuotaInfo, RemovedFile, RequestId, SetQuotaRequest, SetTrashPathRequest,
    TrashFileRequest,
};

use super::meta::Mutating;
use super::{meta_client, MasterClient};
use crate::error::ClientError;

impl Mutating for TrashFileRequest {
    fn set_request_id(&mut self, id: RequestId) {
        self.id = Some(id);
    }
}

impl Mutating for SetTrashPathRequest {
    fn set_request_id(&mut self, id: RequestId) {
        self.id = Some(id);
    }
}

fn file_req(cred: &Credentials, inode: u64) -> TrashFileRequest {
    TrashFileRequest {
        id: None,
        cred: Some(cred.clone()),
        inode,
    }
}

impl MasterClient {
    /// Trashed (or, with `sustained`, sustained) files with inode numbers
    /// above `after`, at most `limit`, in inode order.
    pub async fn list_removed(
        &self,
        sustained: bool,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RemovedFile>, ClientError> {
        let req = ListRemovedRequest {
            sustained,
            after_inode: after,
            limit,
        };
        let r = self
            .inner
            .call("ListRemoved", req, |ch, r| async move {
                meta_client(ch).list_removed(r).await
            })
            .await?;
        Ok(r.files)
    }

    /// Every trashed (or sustained) file, fetched a page at a time.
    pub async fn list_removed_all(&self, sustained: bool) -> Result<Vec<RemovedFile>, ClientError> {
        const PAGE: u32 = 5000;
        let mut out: Vec<RemovedFile> = Vec::new();
        loop {
            let after = out.last().map_or(0, |f| f.inode);
            let page = self.list_removed(sustained, after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The trashed or sustained file `inode`, if it is one.
    pub async fn removed_file(
        &self,
        sustained: bool,
        inode: u64,
    ) -> Result<Option<RemovedFile>, ClientError> {
        let page = self
            .list_removed(sustained, inode.saturating_sub(1), 1)
            .await?;
        Ok(page.into_iter().find(|f| f.inode == inode))
    }

    /// Removes a trashed file for good.
    pub async fn trash_delete(&self, cred: &Credentials, inode: u64) -> Result<(), ClientError> {
        self.call_mut("TrashDelete", file_req(cred, inode), |ch, r| async move {
            meta_client(ch).trash_delete(r).await
        })
        .await
        .map(|_| ())
    }

    /// Puts a trashed file back at its path; returns its attributes.
    pub async fn undelete(&self, cred: &Credentials, inode: u64) -> Result<Attr, ClientError> {
        let r = self
            .call_mut("Undelete", file_req(cred, inode), |ch, r| async move {
                meta_client(ch).undelete(r).await
            })
            .await?;
        r.attr
            .ok_or_else(|| ClientError::BadReply("Undelete reply without attributes".into()))
    }

    /// Sets the path a trashed file goes back to.
    pub async fn set_trash_path(
        &self,
        cred: &Credentials,
        inode: u64,
        path: Vec<u8>,
    ) -> Result<(), ClientError> {
        let req = SetTrashPathRequest {
            id: None,
            cred: Some(cred.clone()),
            inode,
            path,
        };
        self.call_mut("SetTrashPath", req, |ch, r| async move {
            meta_client(ch).set_trash_path(r).await
        })
        .await
        .map(|_| ())
    }
}

impl Mutating for SetQuotaRequest {
    fn set_request_id(&mut self, id: RequestId) {
        self.id = Some(id);
    }
}

impl MasterClient {
    /// Sets (or with `delete`, removes) a directory's quota; returns the
    /// quota as it is after.
    pub async fn set_quota(&self, req: SetQuotaRequest) -> Result<Option<QuotaInfo>, ClientError> {
        let r = self
            .call_mut("SetQuota", req, |ch, r| async move {
                meta_client(ch).set_quota(r).await
            })
            .await?;
        Ok(r.quota)
    }

    /// The quota of directory `inode` (`None`: it has none).
    pub async fn get_quota(&self, inode: u64) -> Result<Option<QuotaInfo>, ClientError> {
        let r = self
            .inner
            .call("GetQuota", GetQuotaRequest { inode }, |ch, r| async move {
                meta_client(ch).get_quota(r).await
            })
            .await?;
        Ok(r.quota)
    }

    /// Every quota of the file system.
    pub async fn list_quotas(&self) -> Result<Vec<QuotaInfo>, ClientError> {
        let r = self
            .inner
            .call("ListQuotas", ListQuotasRequest {}, |ch, r| async move {
                meta_client(ch).list_quotas(r).await
            })
            .await?;
        Ok(r.quotas)
    }

    /// mfsdirinfo's counts for `inode`, from the master (shared chunks
    /// counted once).
    pub async fn dir_info(&self, inode: u64) -> Result<DirInfoReply, ClientError> {
        self.inner
            .call("DirInfo", DirInfoRequest { inode }, |ch, r| async move {
                meta_client(ch).dir_info(r).await
            })
            .await
    }
}
