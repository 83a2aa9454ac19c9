//! A snapshot read back as a backup source. `stowage optimize` backs a snapshot up again
//! from the repository itself with gzip content on, so layers a fast first backup stored as
//! they are become plaintext and recipes, and the next nightly backup takes them from there.
//! Files come back through the restore path: every blob and every registry digest checked.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use stowage_backends::source::{EntryMeta, Source};

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::reader::read_content;
use crate::repo::walk::{load_dir, top_node};
use crate::repo::Repository;
use crate::runtime;

/// Blobs of one file in flight between the repository and the backup reading it.
const IN_FLIGHT: usize = 4;

pub struct SnapshotSource {
    repo: Arc<Repository>,
    rt: tokio::runtime::Handle,
    snapshot: Snapshot,
    top: Node,
    /// Directory trees loaded so far, by path below the top (a directory is listed after
    /// its parent, so its node is always found in a tree already here).
    trees: Mutex<HashMap<PathBuf, Arc<Tree>>>,
}

/// A repository error as an I/O error of the source. Never of kind NotFound: the backup
/// would take the file for one deleted meanwhile and leave it out.
fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl SnapshotSource {
    /// The source of `snapshot`; call from within the runtime that will run the backup.
    pub async fn new(repo: Arc<Repository>, snapshot: Snapshot) -> Result<Self> {
        let top = top_node(&repo, &snapshot.tree).await?;
        Ok(SnapshotSource {
            repo,
            rt: runtime::handle(),
            snapshot,
            top,
            trees: Mutex::new(HashMap::new()),
        })
    }

    /// The node at `rel` (the top for an empty path).
    fn node(&self, rel: &Path) -> io::Result<Node> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(self.top.clone());
        };
        self.tree(parent)?
            .find(name.as_bytes())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the snapshot"))
    }

    fn tree(&self, rel: &Path) -> io::Result<Arc<Tree>> {
        if let Some(tree) = self
            .trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
        {
            return Ok(Arc::clone(tree));
        }
        let node = self.node(rel)?;
        if node.kind != NodeKind::Dir {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let tree =
            Arc::new(runtime::wait(&self.rt, load_dir(&self.repo, rel, &node)).map_err(to_io)?);
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_path_buf(), Arc::clone(&tree));
        Ok(tree)
    }
}

impl Source for SnapshotSource {
    fn kind(&self) -> &'static str {
        // The new snapshot stands for the same source, so later backups take it as parent.
        match self.snapshot.source.kind.as_str() {
            "fs" => "fs",
            "s3" => "s3",
            "nfs" => "nfs",
            _ => "snapshot",
        }
    }

    fn uri(&self) -> String {
        self.snapshot.source.uri.clone()
    }

    fn root(&self) -> io::Result<EntryMeta> {
        Ok(self.top.meta())
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<EntryMeta>> {
        Ok(self.tree(rel)?.nodes.iter().map(Node::meta).collect())
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>> {
        let node = self.node(rel)?;
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let (repo, rt, path) = (Arc::clone(&self.repo), self.rt.clone(), rel.to_path_buf());
        // A thread that panics drops its sender without `Done`: `Received` reports that.
        std::thread::spawn(move || {
            let read = read_content(
                &repo,
                &rt,
                &path,
                &node,
                crate::registry::blob_digest(&path),
                |bytes| {
                    tx.send(Chunk::Bytes(bytes.to_vec()))
                        .map_err(|_| Error::bug("the reader went away"))
                },
            );
            let _ = tx.send(match read {
                Ok(_) => Chunk::Done,
                Err(e) => Chunk::Failed(e),
            });
        });
        Ok(Box::new(Received {
            rx,
            bytes: Vec::new(),
            at: 0,
            done: false,
        }))
    }
}

/// What the reading thread sends: bytes in order, then how it ended.
enum Chunk {
    Bytes(Vec<u8>),
    Done,
    Failed(Error),
}

/// The bytes another thread reads from the repository, in order. Only its `Done` ends the
/// file: a thread gone without it is an error, never a shorter file.
struct Received {
    rx: Receiver<Chunk>,
    bytes: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.bytes.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Bytes(bytes)) => (self.bytes, self.at) = (bytes, 0),
                Ok(Chunk::Done) => self.done = true,
                Ok(Chunk::Failed(e)) => return Err(to_io(e)),
                Err(_) => return Err(io::Error::other("the file's reader stopped early")),
            }
        }
        let n = buf.len().min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{Chunk, Received};
    use std::io::Read;
    use std::sync::mpsc::sync_channel;

    fn received(chunks: Vec<Chunk>) -> std::io::Result<Vec<u8>> {
        let (tx, rx) = sync_channel(chunks.len());
        for chunk in chunks {
            tx.send(chunk).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        let mut reader = Received {
            rx,
            bytes: Vec::new(),
            at: 0,
            done: false,
        };
        reader.read_to_end(&mut out)?;
        // Read again after the end: still the end.
        assert_eq!(reader.read(&mut [0; 8])?, 0);
        Ok(out)
    }

    #[test]
    fn only_the_readers_done_ends_the_file() {
        let bytes = |b: &[u8]| Chunk::Bytes(b.to_vec());
        assert_eq!(
            received(vec![bytes(b"ab"), bytes(b"c"), Chunk::Done]).unwrap(),
            b"abc"
        );
        // A reader gone without saying it is done (it panicked): an error, not a short file.
        assert!(received(vec![bytes(b"ab")]).is_err());
        let failed = Chunk::Failed(crate::Error::MissingBlob(crate::Id([7; 32])));
        let err = received(vec![bytes(b"ab"), failed]).unwrap_err();
        assert_ne!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
