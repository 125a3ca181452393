//! Who this master is and which cluster it belongs to: stamped on every Raft
//! message it sends and checked on every one it receives, so that a master
//! from another cluster (or a stale data dir) cannot join by accident.

use std::sync::RwLock;

use mfs_proto::{ClusterSecret, CLUSTER_KEY};
use tonic::metadata::{MetadataMap, MetadataValue};

/// Persists a cluster id adopted from the leader (into the data dir).
pub type PersistClusterId = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub struct Identity {
    pub node_id: u64,
    cluster_id: RwLock<Option<String>>,
    secret: ClusterSecret,
    persist: PersistClusterId,
}

impl Identity {
    pub fn new(
        node_id: u64,
        cluster_id: Option<String>,
        secret: String,
        persist: PersistClusterId,
    ) -> Self {
        Identity {
            node_id,
            cluster_id: RwLock::new(cluster_id),
            secret: ClusterSecret::new(&secret),
            persist,
        }
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().map(|g| g.clone()).unwrap_or(None)
    }

    /// Sets the cluster id (first start of a new cluster, or adoption).
    pub fn set_cluster_id(&self, id: &str) -> Result<(), String> {
        let mut g = self
            .cluster_id
            .write()
            .map_err(|_| "identity lock poisoned".to_string())?;
        match g.as_deref() {
            Some(cur) if cur == id => Ok(()),
            Some(cur) => Err(format!("this master belongs to cluster {cur}, not {id}")),
            None => {
                (self.persist)(id)?;
                *g = Some(id.to_string());
                tracing::info!(cluster_id = id, "joined cluster");
                Ok(())
            }
        }
    }

    /// Adds our cluster id and secret to an outgoing request.
    pub fn stamp(&self, md: &mut MetadataMap) {
        if let Some(id) = self.cluster_id() {
            if let Ok(v) = MetadataValue::try_from(id.as_str()) {
                md.insert(CLUSTER_KEY, v);
            }
        }
        self.secret.stamp(md);
    }

    /// The cluster secret (`CLUSTER_SECRET`), also asked of chunkservers.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Checks an incoming Raft request: the secret must match, and the sender's
    /// cluster id must be ours (a master that has none yet adopts it).
    pub fn check(&self, md: &MetadataMap) -> Result<(), tonic::Status> {
        self.secret.check(
            md,
            "CLUSTER_SECRET must be the same on every master and metalogger",
        )?;
        let theirs = md.get(CLUSTER_KEY).and_then(|v| v.to_str().ok());
        match (self.cluster_id(), theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(tonic::Status::failed_precondition(format!(
                "master {} belongs to cluster {ours}, the sender to cluster {theirs}: a data dir from another cluster? \
                 wipe the newer member's DATA_PATH and add it again",
                self.node_id
            ))),
            (None, Some(theirs)) => self.set_cluster_id(theirs).map_err(tonic::Status::failed_precondition),
            _ => Ok(()),
        }
    }
}
