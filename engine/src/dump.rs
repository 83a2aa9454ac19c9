//! One entry of a snapshot, by path: `stowage dump <snapshot> <path>` prints a file (one row
//! of a DTR metadata table, a registry manifest), verified like a restore.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::registry;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Content, Node, NodeKind};

/// The node at `path` (`/`-separated, starting with the snapshot's top directory).
pub async fn find(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Node> {
    let missing = || Error::Invalid(format!("{path}: no such entry in the snapshot"));
    let mut nodes = repo.load_tree(&snapshot.tree).await?.nodes;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        let node = nodes
            .into_iter()
            .find(|n| n.name.0 == part.as_bytes())
            .ok_or_else(missing)?;
        if parts.peek().is_none() {
            return Ok(node);
        }
        let subtree = node
            .subtree
            .filter(|_| node.kind == NodeKind::Dir)
            .ok_or_else(missing)?;
        nodes = repo.load_tree(&subtree).await?.nodes;
    }
    Err(missing())
}

/// Writes the content of the file at `path` to `out`; returns its size. Blob ids, the size
/// and, for a registry blob, its sha256 digest are verified.
pub async fn dump(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let node = find(repo, snapshot, path).await?;
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!("{path} is not a file")));
    }
    let digest = registry::blob_digest(Path::new(path));
    let mut sha = Sha256::new();
    let mut written = 0u64;
    let write_err = |e| Error::io("the output", e);
    match &node.content {
        Some(Content::Inline(bytes)) => {
            sha.update(&bytes.0);
            out.write_all(&bytes.0).map_err(write_err)?;
            written = bytes.0.len() as u64;
        }
        Some(Content::Chunks(ids)) => {
            for id in ids {
                let bytes = repo.read_blob(id).await?;
                sha.update(&bytes);
                out.write_all(&bytes).map_err(write_err)?;
                written += bytes.len() as u64;
            }
        }
        None => {}
    }
    out.flush().map_err(write_err)?;
    if written != node.size {
        return Err(Error::corrupt(
            path,
            format!("{written} bytes where the snapshot says {}", node.size),
        ));
    }
    if let Some(expected) = digest {
        let actual: [u8; 32] = sha.finalize().into();
        if actual != expected {
            return Err(Error::DigestMismatch {
                path: path.to_string(),
                digest: hex::encode(expected),
            });
        }
    }
    Ok(written)
}
