//! One entry of a snapshot, by path: `stowage dump <snapshot> <path>` prints a file (one row
//! of a DTR metadata table, a registry manifest), verified like a restore.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::restore::read_content;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};

/// The node at `path` (`/`-separated, starting with the snapshot's top directory).
pub async fn find(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Node> {
    find_opt(repo, snapshot, path)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{path}: no such entry in the snapshot")))
}

/// The node at `path`, `None` when there is none; errors only for what went wrong reading.
pub async fn find_opt(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Option<Node>> {
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

/// Writes the content of the file at `path` to `out`; returns its size. Blob ids, the size
/// and, for a registry blob, its sha256 digest are verified (a failure after bytes went out
/// is still an error: the caller exits non-zero). Needs the multi-threaded runtime.
pub async fn dump(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let node = find(repo, snapshot, path).await?;
    write_file(repo, path, &node, out).await
}

/// Writes the content of the file `node` (found at `path`, which decides whether it is a
/// registry blob to check against its digest) to `out`, verified like a restore.
pub async fn write_file(
    repo: &Repository,
    path: &str,
    node: &Node,
    out: &mut dyn Write,
) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!("{path} is not a file")));
    }
    let handle = tokio::runtime::Handle::current();
    let read = tokio::task::block_in_place(|| {
        read_content(repo, &handle, Path::new(path), node, |bytes| {
            out.write_all(bytes).map_err(|e| Error::io("the output", e))
        })
    })?;
    out.flush().map_err(|e| Error::io("the output", e))?;
    Ok(read.bytes)
}
