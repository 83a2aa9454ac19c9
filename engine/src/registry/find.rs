//! Which snapshots hold something: a registry blob by its digest (which nights held this
//! layer), or the paths matching a pattern.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::pattern::Pattern;
use crate::registry::layout::{blob_data, Digest};
use crate::registry::select::v2_root;
use crate::repo::walk::{find_opt, Walk};
use crate::repo::Repository;

/// One match, in one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub snapshot: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    /// From the snapshot's top (its backed-up directory's name first); a directory's ends
    /// in `/`.
    pub path: String,
    pub size: u64,
}

/// The snapshots whose registry holds the blob `digest` (`sha256:<hex>` or the hex), oldest
/// first. Snapshots without a registry are passed over.
pub async fn find_digest(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    digest: &str,
) -> Result<Vec<Found>> {
    let text = match digest.contains(':') {
        true => digest.to_string(),
        false => format!("sha256:{digest}"),
    };
    let digest = Digest::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        Error::Usage(format!(
            "{digest:?} is not a sha256 digest (sha256:<64 hex digits>)"
        ))
    })?;
    let mut found = Vec::new();
    for (id, snap) in snapshots {
        let v2 = match v2_root(repo, snap).await {
            Ok(v2) => v2,
            Err(e) if e.kind() == ErrorKind::Usage => continue,
            Err(e) => return Err(e),
        };
        let path = blob_data(&v2, &digest);
        if let Some(node) = find_opt(repo, snap, &path).await? {
            found.push(Found {
                snapshot: *id,
                time: snap.time,
                path,
                size: node.size,
            });
        }
    }
    Ok(found)
}

/// The paths of the snapshots matching `pattern` ([`Pattern`]: names alone without a `/`,
/// whole paths from the snapshot's top with one), oldest snapshot first.
pub async fn find_paths(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    pattern: &str,
) -> Result<Vec<Found>> {
    let pattern = Pattern::new(pattern);
    let mut found = Vec::new();
    for (id, snap) in snapshots {
        let mut walk = Walk::snapshot(repo, snap).await?;
        while let Some((rel, node)) = walk.next().await? {
            let path = rel.to_string_lossy();
            let is_dir = node.kind == NodeKind::Dir;
            if pattern.matches(&path, is_dir) {
                let slash = if is_dir { "/" } else { "" };
                found.push(Found {
                    snapshot: *id,
                    time: snap.time,
                    path: format!("{path}{slash}"),
                    size: node.size,
                });
            }
        }
    }
    Ok(found)
}
