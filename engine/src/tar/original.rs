//! The exact tar out again (FORMAT.md, "Tar snapshots"): `write_original_tar` walks the
//! skeleton of a tar snapshot again, takes each entry's content from the tree, and checks
//! the result against the sha256 of the tar that was backed up.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::normalize;
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::progress::Progress;
use crate::repo::reader::read_content;
use crate::repo::walk::Walk;
use crate::repo::Repository;
use crate::runtime;
use crate::tar::walk::{Item, Kind, TarWalker};

/// Every file of the snapshot's tree by its path in the tar (the added top left out).
async fn files_by_path(
    repo: &Repository,
    snapshot: &Snapshot,
    added_top: bool,
) -> Result<HashMap<Vec<Vec<u8>>, Node>> {
    let mut files = HashMap::new();
    let mut walk = Walk::snapshot(repo, snapshot).await?;
    while let Some((rel, node)) = walk.next().await? {
        if node.kind == NodeKind::File {
            let path = rel.iter().skip(usize::from(added_top));
            files.insert(path.map(|part| part.as_bytes().to_vec()).collect(), node);
        }
    }
    Ok(files)
}

/// Writes the exact tar a tar snapshot was made from; returns its size. Every blob is
/// verified, and the whole stream against the tar's sha256: a mismatch is an error (the
/// bytes already written cannot be taken back; the stream then lacks nothing GNU tar would
/// notice, so callers must treat the error as fatal).
pub async fn write_original_tar(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    out: Box<dyn Write + Send>,
    progress: Arc<dyn Progress>,
) -> Result<u64> {
    let layout = snapshot.tar.clone().ok_or_else(|| {
        Error::Usage(format!(
            "snapshot of {} was not made from a tar; use restore --format tar",
            snapshot.source.uri
        ))
    })?;
    let files = files_by_path(&repo, snapshot, layout.added_top).await?;
    progress.phase("restore", Some(layout.size));
    let handle = runtime::handle();
    runtime::blocking("the tar writer", move || {
        let mut out = HashingWriter {
            inner: out,
            sha: Sha256::new(),
            bytes: 0,
        };
        let write_err = |e: std::io::Error| Error::io("the tar output", e);
        let mut walker = TarWalker::new(SkeletonReader {
            repo: &repo,
            handle: &handle,
            ids: layout.skeleton.iter(),
            current: std::io::Cursor::new(Vec::new()),
        });
        loop {
            let entry = match walker.next_item()? {
                Item::End(first) => {
                    out.write_all(&first).map_err(write_err)?;
                    std::io::copy(walker.rest(), &mut out).map_err(write_err)?;
                    break;
                }
                Item::Entry(entry) => entry,
            };
            out.write_all(&entry.raw).map_err(write_err)?;
            if matches!(entry.kind, Kind::File | Kind::HardLink) && entry.size > 0 {
                let path = normalize(&entry.path)?.unwrap_or_default();
                let node = files.get(&path).ok_or_else(|| {
                    Error::corrupt(
                        "tar snapshot",
                        format!("no content for {:?}", String::from_utf8_lossy(&entry.path)),
                    )
                })?;
                let rel = std::path::PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned());
                let read = read_content(&repo, &handle, &rel, node, crate::registry::blob_digest(&rel), |bytes| {
                    progress.advance(bytes.len() as u64);
                    out.write_all(bytes).map_err(write_err)
                })?;
                if read.bytes != entry.size {
                    return Err(Error::corrupt(
                        String::from_utf8_lossy(&entry.path),
                        format!(
                            "{} content bytes where the tar header says {}",
                            read.bytes, entry.size
                        ),
                    ));
                }
            } else if entry.size > 0 {
                std::io::copy(&mut walker.content(entry.size), &mut out).map_err(write_err)?;
            }
            out.write_all(&walker.padding(entry.size)?).map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
        let sha = hex::encode(out.sha.finalize());
        if out.bytes != layout.size || sha != layout.sha256 {
            return Err(Error::corrupt(
                "tar snapshot",
                format!(
                    "the rebuilt tar ({} bytes, sha256 {sha}) is not the one backed up ({} bytes, sha256 {})",
                    out.bytes, layout.size, layout.sha256
                ),
            ));
        }
        Ok(out.bytes)
    })
    .await?
}

/// Reads the skeleton's blobs one after the other (bounded memory).
struct SkeletonReader<'a> {
    repo: &'a Repository,
    handle: &'a tokio::runtime::Handle,
    ids: std::slice::Iter<'a, Id>,
    current: std::io::Cursor<Vec<u8>>,
}

impl Read for SkeletonReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            let blob = runtime::wait(self.handle, self.repo.read_blob(id))
                .map_err(std::io::Error::other)?;
            self.current = std::io::Cursor::new(blob);
        }
    }
}

struct HashingWriter {
    inner: Box<dyn Write + Send>,
    sha: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
