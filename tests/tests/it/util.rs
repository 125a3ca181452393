//! Small helpers shared by the tests.

use mfs_mount::master::MasterClient;
use mfs_proto::v1::{CreateRequest, Credentials, ReaddirRequest};

pub fn root_cred() -> Credentials {
    Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

pub fn step(s: &str) {
    eprintln!("=== {s}");
}

/// Creates `name` in the root directory, exclusively (a create applied twice
/// would answer EEXIST).
pub fn create_req(name: &str) -> CreateRequest {
    CreateRequest {
        id: None,
        cred: Some(root_cred()),
        parent: 1,
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        umask: 0o022,
        exclusive: true,
    }
}

/// Every (name, inode) in a directory, through all pages.
pub async fn list_dir(c: &MasterClient, inode: u64) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut after = Vec::new();
    loop {
        let r = c
            .readdir(ReaddirRequest {
                cred: Some(root_cred()),
                inode,
                after: after.clone(),
                limit: 500,
                plus: false,
            })
            .await?;
        for e in &r.entries {
            out.push((String::from_utf8_lossy(&e.name).into_owned(), e.inode));
        }
        match r.entries.last() {
            Some(last) if r.more => after = last.name.clone(),
            _ => break,
        }
    }
    Ok(out)
}
