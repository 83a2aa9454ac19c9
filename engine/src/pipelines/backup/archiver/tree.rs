//! The walk of the source and the trees made of it. One task walks depth first in name
//! order, with the directories it is in on a stack; files to read go to the readers, and a
//! directory whose entries have all been handed out is finished beside the walk: its tree
//! made of its entries' nodes, reused from the parent when unchanged. What is in memory
//! follows the depth of the tree and the work in flight, not the number of files.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use stowage_backends::source::EntryMeta;
use tokio::task::JoinHandle;

use super::listing::{ListAhead, Listed, ParentTree, Prepared, BATCH};
use super::{add, Archiver, FINISHING};
use crate::error::{Error, Joined, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, Tree};
use crate::runtime;

/// A directory entry's node: known at once, or being made (a file read, a directory
/// finished); a read may leave the file out (see [`Archiver::skip`]).
enum Child {
    Ready(Node),
    Task(JoinHandle<Result<Option<Node>>>),
}

impl Child {
    async fn node(self) -> Result<Option<Node>> {
        match self {
            Child::Ready(node) => Ok(Some(node)),
            Child::Task(task) => task.await.joined("a backup worker")?,
        }
    }
}

/// A directory the walk is in.
struct Level {
    rel: PathBuf,
    meta: EntryMeta,
    parent: Option<ParentTree>,
    /// Its entries still to hand out.
    entries: std::vec::IntoIter<Prepared>,
    /// How many of them listing ahead has looked at.
    ahead_from: usize,
    children: Vec<Child>,
}

impl Level {
    fn new(rel: PathBuf, meta: EntryMeta, listed: Listed) -> Self {
        Level {
            rel,
            meta,
            children: Vec::with_capacity(listed.entries.len()),
            parent: listed.parent,
            entries: listed.entries.into_iter(),
            ahead_from: 0,
        }
    }

    /// Adds to `batch` the subdirectories not listed yet among the entries listing ahead
    /// has not looked at, in order, until it holds `up_to`; whether it is full.
    fn gather(&mut self, batch: &mut Vec<(PathBuf, Option<Id>)>, up_to: usize) -> bool {
        let rest = self.entries.as_slice();
        while let Some(entry) = rest.get(self.ahead_from) {
            if batch.len() >= up_to {
                return true;
            }
            self.ahead_from += 1;
            if let Prepared::Dir(meta, parent, None) = entry {
                let rel = self.rel.join(std::ffi::OsStr::from_bytes(&meta.name));
                batch.push((rel, *parent));
            }
        }
        batch.len() >= up_to
    }
}

impl Archiver {
    /// Archives the source's root directory, `meta`, and everything under it; `parent` is
    /// its tree in the parent snapshot. Returns its node.
    pub async fn archive(self: Arc<Self>, meta: EntryMeta, parent: Option<Id>) -> Result<Node> {
        let mut ahead = ListAhead::new(self.opts.read_ahead);
        let Some(listed) = Arc::clone(&self).list(PathBuf::new(), parent).await? else {
            return Err(Error::io(
                self.source.uri(),
                std::io::Error::other("the top directory cannot be read"),
            ));
        };
        let mut open = vec![Level::new(PathBuf::new(), meta, listed)];
        let mut held_max = 0;
        loop {
            self.list_ahead(&mut open, &mut ahead);
            held_max = self.held(&open, &ahead, held_max);
            let level = open.last_mut().expect("the walk is in a directory");
            let next = level.entries.next();
            if next.is_some() {
                level.ahead_from = level.ahead_from.saturating_sub(1);
            }
            match next {
                Some(Prepared::Node(node)) => level.children.push(Child::Ready(node)),
                Some(Prepared::Read(entry)) => {
                    let rel = level.rel.join(std::ffi::OsStr::from_bytes(&entry.name));
                    let read = self.start_read(rel, entry).await;
                    level.children.push(Child::Task(read));
                }
                Some(Prepared::Dir(entry, parent, listed)) => {
                    let rel = level.rel.join(std::ffi::OsStr::from_bytes(&entry.name));
                    let listed = match listed {
                        Some(listed) => listed,
                        None => {
                            // Not listed ahead (no room was left): listed now, in a batch
                            // with the siblings that follow it.
                            if !ahead.holds(&rel) {
                                let mut batch = vec![(rel.clone(), parent)];
                                level.gather(&mut batch, BATCH);
                                ahead.start(&self, batch);
                            }
                            ahead.take(&self, rel.clone(), parent).await
                        }
                    };
                    if let Some(listed) = listed? {
                        open.push(Level::new(rel, entry, listed));
                    }
                }
                None => {
                    let done = open.pop().expect("the walk is in a directory");
                    let finish = self.start_finish(done).await?;
                    match open.last_mut() {
                        Some(level) => level.children.push(finish),
                        None => {
                            let root = finish.node().await?;
                            return root
                                .ok_or_else(|| Error::bug("the top directory was left out"));
                        }
                    }
                }
            }
        }
    }

    /// Starts listing the directories the walk will enter next, up to the read-ahead
    /// limit, a batch at a time: the innermost directory's first, so the next one needed is
    /// under way unless the limit is taken by those further on.
    fn list_ahead(self: &Arc<Self>, open: &mut [Level], ahead: &mut ListAhead) {
        loop {
            let room = ahead.room();
            let mut batch = Vec::with_capacity(room);
            for level in open.iter_mut().rev() {
                if level.gather(&mut batch, room) {
                    break;
                }
            }
            if batch.is_empty() {
                return;
            }
            ahead.start(self, batch);
        }
    }

    /// Reads a file's content on a blocking thread once a reader is free.
    async fn start_read(
        self: &Arc<Self>,
        rel: PathBuf,
        entry: EntryMeta,
    ) -> JoinHandle<Result<Option<Node>>> {
        let slot = Arc::clone(&self.file_slots)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let node = runtime::blocking("a backup worker", move || me.read_file(&rel, &entry))
                .await
                .and_then(|node| node);
            drop(slot);
            node
        })
    }

    /// Finishes a directory: at once when its entries' nodes are all known (little work,
    /// and the common case of an unchanged tree), else beside the walk once a finishing slot
    /// is free, waiting for its entries' nodes.
    async fn start_finish(self: &Arc<Self>, level: Level) -> Result<Child> {
        if level.children.iter().all(|c| matches!(c, Child::Ready(_))) {
            return Ok(Child::Ready(self.finish(level).await?));
        }
        let slot = Arc::clone(&self.finish_slots)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let me = Arc::clone(self);
        Ok(Child::Task(tokio::spawn(async move {
            let node = me.finish(level).await;
            drop(slot);
            node.map(Some)
        })))
    }

    /// A directory's node: its tree made of its entries' nodes (those left out left out),
    /// the parent's when unchanged.
    async fn finish(&self, level: Level) -> Result<Node> {
        let mut nodes = Vec::with_capacity(level.children.len());
        for child in level.children {
            nodes.extend(child.node().await?);
        }
        let tree = Tree { nodes };
        // Unchanged directory: its tree is the parent's, already stored (unless only in a
        // pack a prune marked); no need to encode and hash it again.
        let id = match level.parent {
            Some(before) if before.tree == tree && self.packer.stored_in(before.pack) => before.id,
            _ => {
                let bytes = serde_json::to_vec(&tree).expect("trees serialize");
                self.packer.add_async(BlobKind::Tree, &bytes).await?
            }
        };
        add(&self.counts.dirs, 1);
        let mut node = Node::from_meta(&level.meta).expect("directories have nodes");
        node.subtree = Some(id);
        Ok(node)
    }

    /// Reports the directories held in memory (open, listed ahead or being finished) when
    /// more than ever before in this backup; returns the most so far. The tests watch it to
    /// show that memory follows the work, not the size of the tree.
    fn held(&self, open: &[Level], ahead: &ListAhead, max: u64) -> u64 {
        let finishing = FINISHING - self.finish_slots.available_permits();
        let held = (open.len() + ahead.len() + finishing) as u64;
        if held > max {
            self.progress.gauge("backup.dirs_held", held);
        }
        held.max(max)
    }
}
