//! What snapshots need: every tree and content blob reachable from their root trees, plus
//! their other blobs (tar skeletons).

use std::collections::HashSet;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::repo::walk::each_tree;
use crate::repo::Repository;

/// Every blob the snapshots need. Fails if a tree cannot be read: an incomplete answer
/// would let a prune delete data a snapshot needs.
pub async fn reachable<'a>(
    repo: &Repository,
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
) -> Result<HashSet<Id>> {
    let mut blobs = HashSet::new();
    let mut roots = Vec::new();
    for snap in snapshots {
        blobs.extend(snap.extra_blobs().iter().copied());
        roots.push(snap.tree);
    }
    let mut trees = HashSet::new();
    each_tree(repo, roots, &mut trees, |_, tree| {
        blobs.extend(tree?.nodes.iter().flat_map(|node| node.blobs().copied()));
        Ok(())
    })
    .await?;
    blobs.extend(trees);
    Ok(blobs)
}
