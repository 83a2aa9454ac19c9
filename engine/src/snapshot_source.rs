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
use crate::repo::Repository;
use crate::restore::{load_dir, read_content, top_node};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree};

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

fn to_io(e: Error) -> io::Error {
    match e {
        Error::Io { cause, .. } => cause,
        e => io::Error::other(e.to_string()),
    }
}

impl SnapshotSource {
    /// The source of `snapshot`; call from within the runtime that will run the backup.
    pub async fn new(repo: Arc<Repository>, snapshot: Snapshot) -> Result<Self> {
        let top = top_node(&repo, &snapshot.tree).await?;
        Ok(SnapshotSource {
            repo,
            rt: tokio::runtime::Handle::current(),
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
        let tree = Arc::new(
            self.rt
                .block_on(load_dir(&self.repo, rel, &node))
                .map_err(to_io)?,
        );
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
        std::thread::spawn(move || {
            let read = read_content(&repo, &rt, &path, &node, |bytes| {
                tx.send(Ok(bytes.to_vec()))
                    .map_err(|_| Error::Invalid("the reader went away".into()))
            });
            if let Err(e) = read {
                let _ = tx.send(Err(e));
            }
        });
        Ok(Box::new(Received {
            rx,
            bytes: Vec::new(),
            at: 0,
        }))
    }
}

/// The bytes another thread reads from the repository, in order; its error, if any, last.
struct Received {
    rx: Receiver<Result<Vec<u8>>>,
    bytes: Vec<u8>,
    at: usize,
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.bytes.len() {
            match self.rx.recv() {
                Ok(Ok(bytes)) => (self.bytes, self.at) = (bytes, 0),
                Ok(Err(e)) => return Err(to_io(e)),
                // The reading thread is done and sent everything.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
