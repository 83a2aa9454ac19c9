//! What snapshots need: every tree and content blob reachable from their root trees, plus
//! their other blobs (tar skeletons).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::error::Result;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::repo::Repository;

/// Trees loaded at once.
const TREE_LOADS: usize = 16;

/// Every blob the snapshots need. Fails if a tree cannot be read: an incomplete answer
/// would let a prune delete data a snapshot needs.
pub async fn reachable<'a>(
    repo: &Repository,
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
) -> Result<HashSet<Id>> {
    let mut blobs = HashSet::new();
    let mut level = Vec::new();
    for snap in snapshots {
        blobs.extend(snap.extra_blobs().iter().copied());
        if blobs.insert(snap.tree) {
            level.push(snap.tree);
        }
    }
    while !level.is_empty() {
        let trees: Vec<_> = futures::stream::iter(level)
            .map(|id| async move { repo.load_tree(&id).await })
            .buffer_unordered(TREE_LOADS)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for tree in trees {
            for node in tree.nodes {
                next.extend(node.subtree.filter(|sub| blobs.insert(*sub)));
                blobs.extend(node.blobs().copied());
            }
        }
        level = next;
    }
    Ok(blobs)
}
