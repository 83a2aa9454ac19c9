//! Archiving a directory: its entries as tasks (subdirectories, files to read) or known at
//! once (unchanged files, symlinks), then its tree, reused from the parent when unchanged.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use stowage_backends::source::{EntryKind, EntryMeta};

use super::listing::Listing;
use super::{add, display, Archiver};
use crate::error::{Error, Joined, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::runtime;

/// A directory entry's node: known at once (unchanged files, symlinks) or being made.
enum Child {
    Ready(Node),
    Task(tokio::task::JoinHandle<Result<Node>>),
}

impl Archiver {
    /// Archives the directory at `rel`, returning its node; `parent` is the same directory's
    /// tree in the parent snapshot, `listing` its entries when already read.
    pub fn archive_dir(
        self: Arc<Self>,
        rel: PathBuf,
        meta: EntryMeta,
        parent: Option<Id>,
        listing: Option<Result<Listing>>,
    ) -> BoxFuture<'static, Result<Node>> {
        async move {
            let Listing { entries, subdirs } = match listing {
                Some(listing) => listing?,
                None => self.list_dirs(vec![rel.clone()]).await.remove(0)?,
            };
            let parent_tree = match parent {
                Some(id) => Some(self.repo.load_tree(&id).await?),
                None => None,
            };
            let mut listings = self.complete(&rel, &entries, subdirs).await.into_iter();
            let mut children = Vec::with_capacity(entries.len());
            for entry in entries {
                let child_rel = rel.join(std::ffi::OsStr::from_bytes(&entry.name));
                let previous = parent_tree
                    .as_ref()
                    .and_then(|t| t.find(&entry.name))
                    .cloned();
                let me = Arc::clone(&self);
                match entry.kind {
                    EntryKind::Dir => {
                        let subtree = previous
                            .filter(|p| p.kind == NodeKind::Dir)
                            .and_then(|p| p.subtree);
                        let listing = listings.next();
                        children.push(Child::Task(tokio::spawn(
                            me.archive_dir(child_rel, entry, subtree, listing),
                        )));
                    }
                    EntryKind::File => {
                        // Unchanged content is decided here, without a blocking task: most
                        // files of a nightly backup are unchanged.
                        if let Some(node) =
                            self.known_file(&child_rel, &entry, previous.as_ref())?
                        {
                            children.push(Child::Ready(node));
                            continue;
                        }
                        let slot = Arc::clone(&self.file_slots)
                            .acquire_owned()
                            .await
                            .expect("semaphore open");
                        children.push(Child::Task(tokio::spawn(async move {
                            let node = runtime::blocking("a backup worker", move || {
                                me.read_file(&child_rel, &entry)
                            })
                            .await
                            .and_then(|node| node);
                            drop(slot);
                            node
                        })));
                    }
                    EntryKind::Symlink => {
                        add(&self.counts.symlinks, 1);
                        let node = Node::from_meta(&entry).expect("symlinks have nodes");
                        children.push(Child::Ready(node));
                    }
                    EntryKind::Other => self.progress.warn(&format!(
                        "{}: skipped (not a file, directory or symlink)",
                        display(&child_rel)
                    )),
                }
            }
            let mut nodes = Vec::with_capacity(children.len());
            for child in children {
                let node = match child {
                    Child::Ready(node) => Ok(node),
                    Child::Task(task) => task.await.joined("a backup worker")?,
                };
                match node {
                    Ok(node) => nodes.push(node),
                    Err(Error::Io { path, cause })
                        if cause.kind() == std::io::ErrorKind::NotFound =>
                    {
                        self.progress
                            .warn(&format!("{path}: vanished during the backup, skipped"));
                    }
                    Err(e) => return Err(e),
                }
            }
            let tree = Tree { nodes };
            // Unchanged directory: its tree is the parent's, already stored (unless only in
            // a pack a prune marked); no need to encode and hash it again.
            let id = match (parent, &parent_tree) {
                (Some(id), Some(before)) if *before == tree && self.packer.stored(&[id])? => id,
                _ => {
                    let bytes = serde_json::to_vec(&tree).expect("trees serialize");
                    self.packer.add_async(BlobKind::Tree, &bytes).await?
                }
            };
            add(&self.counts.dirs, 1);
            let mut node = Node::from_meta(&meta).expect("directories have nodes");
            node.subtree = Some(id);
            Ok(node)
        }
        .boxed()
    }
}
