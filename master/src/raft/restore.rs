//! A master data dir made from a namespace alone (the metalogger's restore):
//! a new cluster of one master that starts with that namespace as its state.
//!
//! What is written to `DATA_PATH`:
//! - the data-dir header with the master's id and a fresh cluster id;
//! - one snapshot: the namespace's image at the log position it was restored
//!   to, with a membership of this master alone (a voter);
//! - the vote (that position's term, this master, not committed), so its
//!   first election is at the next term and its log continues after the
//!   restored position.
//!
//! `mfsmaster -d DATA_PATH --id ID` then loads the snapshot, finds itself the
//! only voter, elects itself and serves. More masters join as usual
//! (`mfscli add-master`; they receive the snapshot).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftLogStorage;

use super::learner::make_image;
use super::observer::LogPosition;
use super::sm::parse_image;
use super::store::{LogStore, SyncPolicy};
use super::types::*;
use crate::fsm::Namespace;
use crate::store::{snapfile, DataDir};

/// What [`write_master_dir`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredDir {
    /// The new cluster's id.
    pub cluster_id: String,
    /// The snapshot file written (under `DATA_PATH/snapshots`).
    pub snapshot_file: String,
}

fn fresh_cluster_id() -> String {
    let r: u64 = rand::random();
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{t:x}-{r:016x}")
}

/// Writes a master data dir at `to` (which must be absent or empty) that
/// starts as a new single-master cluster: master `master_id`, reached at
/// `advertise` (`host:port`), holding `ns` as of log position `pos`.
pub async fn write_master_dir(
    to: &Path,
    master_id: u64,
    advertise: &str,
    ns: &Namespace,
    pos: Option<LogPosition>,
) -> Result<RestoredDir, String> {
    if master_id == 0 {
        return Err("the master id must be a positive number".into());
    }
    if !advertise.contains(':') {
        return Err(format!(
            "advertise address `{advertise}`: expected host:port (the address mfsmaster will listen on)"
        ));
    }
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty: restore writes a new master data dir and never overwrites one; \
                     give an empty or new directory",
                    to.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", to.display())),
    }
    let (datadir, db) = DataDir::open(to, master_id).map_err(|e| e.to_string())?;
    let cluster_id = fresh_cluster_id();
    datadir
        .set_cluster_id(&cluster_id)
        .map_err(|e| e.to_string())?;

    let pos = pos.unwrap_or_default();
    let image = make_image(ns, Some(pos), &[(master_id, advertise.to_string())])?;
    // Check that what a master will load reads back.
    parse_image(&image).map_err(|e| format!("the restored image does not read back: {e}"))?;
    let name = snapfile::snapshot_name(pos.index, pos.term);
    snapfile::write_atomic(&datadir.snapshot_dir(), &name, &image).map_err(|e| e.to_string())?;

    let mut log = LogStore::open(db.clone(), &datadir.log_dir(), SyncPolicy::Immediate)?;
    log.save_vote(&Vote::new(pos.term, master_id))
        .await
        .map_err(|e| format!("cannot save the vote: {e}"))?;
    db.flush().map_err(|e| e.to_string())?;
    Ok(RestoredDir {
        cluster_id,
        snapshot_file: name,
    })
}
