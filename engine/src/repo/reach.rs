//! What snapshots need: every tree and content blob reachable from their root trees, plus
//! their other blobs (tar skeletons).

use crate::error::Result;
use crate::extsort::{sort_memory, Sorted, Sorter};
use crate::format::snapshot::Snapshot;
use crate::repo::walk::each_tree;
use crate::repo::Repository;

/// Every blob the snapshots need, in id order, each once; sorted in bounded memory (see
/// `extsort`). Fails if a tree cannot be read: an incomplete answer would let a prune delete
/// data a snapshot needs.
pub async fn reachable<'a>(
    repo: &Repository,
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
) -> Result<Sorted<32>> {
    let mut blobs = Sorter::new(sort_memory());
    let mut roots = Vec::new();
    for snap in snapshots {
        for blob in snap.extra_blobs() {
            blobs.push(blob.0)?;
        }
        roots.push((snap.tree, 0));
    }
    each_tree(repo, roots, |_, id, tree| {
        blobs.push(id.0)?;
        for node in &tree?.nodes {
            for blob in node.blobs() {
                blobs.push(blob.0)?;
            }
        }
        Ok(())
    })
    .await?;
    blobs.sorted()
}
