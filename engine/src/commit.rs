//! The last step of every pipeline that makes snapshots (backup, tar import, copy): write
//! them, and only when everything they need is durable, indexed, retained under Object Lock
//! and safe from a prune running meanwhile (FORMAT.md, "Write order" and "Prune").

use std::collections::HashSet;

use chrono::Utc;

use crate::error::Result;
use crate::id::Id;
use crate::marks::Marks;
use crate::repo::Repository;
use crate::snapshot::Snapshot;

/// Writes `snapshots`, in order, whose blobs are all in the packs `relied` (as the packer
/// reported them); returns their ids.
pub async fn commit(
    repo: &Repository,
    snapshots: Vec<Snapshot>,
    relied: &HashSet<Id>,
) -> Result<Vec<Id>> {
    crate::retention::protect(repo, &snapshots).await?;
    // After the slow part, right before the writes: a prune that marked one of our packs
    // since this run began must not be able to delete it before it sees our snapshot.
    Marks::load(repo.store().as_ref(), repo.keys())
        .await?
        .check_relied(relied, Utc::now())?;
    let mut ids = Vec::with_capacity(snapshots.len());
    for snapshot in &snapshots {
        ids.push(repo.save_json("snapshots", snapshot).await?);
    }
    Ok(ids)
}
