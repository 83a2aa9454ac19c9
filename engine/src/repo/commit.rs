//! The last step of every pipeline that makes snapshots (backup, tar import, copy): write
//! them, and only when everything they need is durable, indexed, retained under Object Lock
//! and safe from a prune running meanwhile (FORMAT.md, "Write order" and "Prune").

use std::collections::HashSet;

use chrono::Utc;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::marks::SAFETY_MARGIN;
use crate::format::snapshot::Snapshot;
use crate::repo::Repository;

/// How long after a marks check the next snapshot write checks again.
const RECHECK: std::time::Duration =
    std::time::Duration::from_secs((SAFETY_MARGIN.num_seconds() / 2) as u64);

/// Writes `snapshots`, in order, whose blobs are all in the packs `relied` (as the packer
/// reported them); returns their ids.
pub async fn commit(
    repo: &Repository,
    snapshots: Vec<Snapshot>,
    relied: &HashSet<Id>,
) -> Result<Vec<Id>> {
    crate::repo::object_lock::protect(repo, relied).await?;
    // After the slow part, right before the writes: a prune that marked one of our packs
    // since this run began must not be able to delete it before it sees our snapshot. The
    // margin covers the time from a check to a write, so many writes (copy) check again.
    let mut ids = Vec::with_capacity(snapshots.len());
    let mut checked: Option<std::time::Instant> = None;
    for snapshot in &snapshots {
        if checked.is_none_or(|at| at.elapsed() > RECHECK) {
            crate::repo::marks::load(repo.store().as_ref(), repo.keys())
                .await?
                .check_relied(relied, Utc::now())?;
            checked = Some(std::time::Instant::now());
        }
        ids.push(repo.save_json("snapshots", snapshot).await?);
    }
    Ok(ids)
}
