//! The one tree walker's steps: a snapshot's top node, a directory's tree (refusing
//! names that would leave it), and a node by path. Every pipeline that walks a snapshot
//! builds on these, so the safety checks on names live in one place.

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::Repository;

/// The single node of a snapshot's root tree (FORMAT.md, "Snapshots"): the backed-up
/// directory, restored by its name.
pub(crate) async fn top_node(repo: &Repository, root: &Id) -> Result<Node> {
    let mut tree = repo.load_tree(root).await?;
    if tree.nodes.len() != 1 {
        return Err(Error::corrupt(
            format!("tree {root}"),
            "root must hold one entry",
        ));
    }
    let top = tree.nodes.remove(0);
    if !safe_name(&top.name.0) {
        return Err(Error::corrupt(
            format!("tree {root}"),
            "unsafe top-level name",
        ));
    }
    Ok(top)
}

/// The tree of the directory `node` (at `rel`), refused if an entry's name would leave it.
pub(crate) async fn load_dir(
    repo: &Repository,
    rel: &std::path::Path,
    node: &Node,
) -> Result<Tree> {
    let subtree = node
        .subtree
        .ok_or_else(|| Error::corrupt(rel.display().to_string(), "directory without tree"))?;
    let tree = repo.load_tree(&subtree).await?;
    if let Some(bad) = tree.nodes.iter().find(|n| !safe_name(&n.name.0)) {
        return Err(Error::corrupt(
            format!("tree {subtree}"),
            format!(
                "entry name {:?} would escape its directory",
                bad.name.lossy()
            ),
        ));
    }
    Ok(tree)
}

/// A name that stays inside its directory.
pub(crate) fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// The node at `path` (`/`-separated, starting with the snapshot's top directory).
pub async fn find(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Node> {
    find_opt(repo, snapshot, path)
        .await?
        .ok_or_else(|| Error::Usage(format!("{path}: no such entry in the snapshot")))
}

/// The node at `path`, `None` when there is none; errors only for what went wrong reading.
pub(crate) async fn find_opt(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
) -> Result<Option<Node>> {
    let mut nodes = repo.load_tree(&snapshot.tree).await?.nodes;
    let mut parts = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .peekable();
    while let Some(part) = parts.next() {
        let Some(node) = nodes.into_iter().find(|n| n.name.0 == part.as_bytes()) else {
            return Ok(None);
        };
        if parts.peek().is_none() {
            return Ok(Some(node));
        }
        let Some(subtree) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Ok(None);
        };
        nodes = repo.load_tree(&subtree).await?.nodes;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_that_escape_are_unsafe() {
        assert!(safe_name(b"data"));
        assert!(safe_name(b"..data"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
