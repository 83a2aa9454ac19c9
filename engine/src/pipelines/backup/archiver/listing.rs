//! Listing the source: a directory's entries, each prepared as far as it can be without the
//! readers (unchanged files, tiny files and symlinks as nodes, subdirectories with their tree
//! in the parent snapshot), a few hundred entries below it listed in the same task, and the
//! directories the walk enters next listed ahead.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage_backends::source::{EntryKind, EntryMeta};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{add, display, Archiver};
use crate::error::{Error, ErrorKind, Joined, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind, Tree, INLINE_MAX};
use crate::runtime;

/// A directory as listed: its entries prepared, and its tree in the parent snapshot.
pub(super) struct Listed {
    pub entries: Vec<Prepared>,
    /// The same directory in the parent snapshot, to reuse when nothing changed.
    pub parent: Option<ParentTree>,
}

/// A directory's tree in the parent snapshot.
pub(super) struct ParentTree {
    pub id: Id,
    pub tree: Tree,
    /// The pack it is in.
    pub pack: Id,
}

impl ParentTree {
    /// Loads the tree `id`, unless there is none or it cannot be read.
    async fn load(archiver: &Archiver, id: Option<Id>) -> Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        match archiver.repo.load_tree_and_pack(&id).await {
            Ok((tree, pack)) => Ok(Some(ParentTree { id, tree, pack })),
            // Damage in the parent snapshot costs this directory's files a read, not the
            // backup.
            Err(e) if e.kind() == ErrorKind::Damaged => {
                archiver.progress.warn(&format!(
                    "the parent snapshot's tree {} cannot be read ({e}); its directory is read again",
                    id.short()
                ));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A directory entry as far as listing can take it.
pub(super) enum Prepared {
    /// Its node is known: a symlink, a tiny file read with the listing, or a file whose
    /// content need not be read.
    Node(Node),
    /// A file whose content is to be read.
    Read(EntryMeta),
    /// A subdirectory, with its tree in the parent snapshot, and its listing when it was
    /// listed with this directory (`None` inside: left out, see [`Archiver::skip`]).
    Dir(EntryMeta, Option<Id>, Option<Result<Option<Listed>>>),
}

/// Entries one listing task lists, depth first: a registry's directories hold one link
/// file each, and a hand-off to a blocking thread per directory would cost more than the
/// listing itself.
const LISTING_BUDGET: usize = 256;

/// Below this depth a listing task leaves subdirectories to the walk (bounded recursion).
const LISTING_DEPTH: usize = 32;

impl Archiver {
    /// Lists the directory at `rel` and, depth first, as much below it as a listing task's
    /// budget allows, preparing their entries; `parent` is its tree in the parent snapshot.
    /// `None` when the directory is left out (see [`Archiver::skip`]).
    pub(super) async fn list(
        self: Arc<Self>,
        rel: PathBuf,
        parent: Option<Id>,
    ) -> Result<Option<Listed>> {
        let mut listed = self.list_batch(vec![(rel, parent)]).await?;
        listed
            .pop()
            .ok_or_else(|| Error::bug("a listing came back empty"))?
    }

    /// Lists the directories of `batch` (path, tree in the parent snapshot) in order as
    /// [`list`](Self::list) does, on one blocking thread and sharing one listing budget.
    async fn list_batch(
        self: Arc<Self>,
        batch: Vec<(PathBuf, Option<Id>)>,
    ) -> Result<Vec<Result<Option<Listed>>>> {
        let _slot = self.dir_slots.acquire().await.expect("semaphore open");
        let rt = runtime::handle();
        let me = Arc::clone(&self);
        runtime::blocking("a listing worker", move || {
            let mut budget = LISTING_BUDGET;
            batch
                .into_iter()
                .map(|(rel, parent)| me.list_below(&rt, &rel, parent, &mut budget, 0))
                .collect()
        })
        .await
    }

    /// Lists `rel` and then, depth first, its subdirectories while `budget` lasts; `parent`
    /// is its tree in the parent snapshot.
    fn list_below(
        &self,
        rt: &Handle,
        rel: &Path,
        parent: Option<Id>,
        budget: &mut usize,
        depth: usize,
    ) -> Result<Option<Listed>> {
        let parent = runtime::wait(rt, ParentTree::load(self, parent))?;
        let listed = match self.source.read_dir(rel) {
            Ok(listed) => listed,
            Err(e) => return self.skip(rel, e).map(|()| None),
        };
        *budget = budget.saturating_sub(listed.len().max(1));
        let previous = parent.as_ref().map(|p| &p.tree);
        let mut entries = self.prepare(rel, listed, previous)?;
        for entry in &mut entries {
            if *budget == 0 || depth >= LISTING_DEPTH {
                break;
            }
            if let Prepared::Dir(meta, subtree, listing @ None) = entry {
                let at = rel.join(std::ffi::OsStr::from_bytes(&meta.name));
                *listing = Some(self.list_below(rt, &at, *subtree, budget, depth + 1));
            }
        }
        Ok(Some(Listed { entries, parent }))
    }

    /// Decides what can be decided of `entries` without the readers: most files of a
    /// nightly backup are unchanged, and tiny files (link files, most of a registry) are
    /// read here at once, inline in their tree.
    fn prepare(
        &self,
        rel: &Path,
        entries: Vec<EntryMeta>,
        parent: Option<&Tree>,
    ) -> Result<Vec<Prepared>> {
        let mut prepared = Vec::with_capacity(entries.len());
        for entry in entries {
            let previous = parent.and_then(|t| t.find(&entry.name));
            let child = || rel.join(std::ffi::OsStr::from_bytes(&entry.name));
            if self.excluded(&child(), entry.kind == EntryKind::Dir) {
                continue;
            }
            match entry.kind {
                EntryKind::Dir => {
                    let subtree = previous
                        .filter(|p| p.kind == NodeKind::Dir)
                        .and_then(|p| p.subtree);
                    prepared.push(Prepared::Dir(entry, subtree, None));
                }
                EntryKind::File => {
                    if let Some(node) = self.known_file(&child(), &entry, previous)? {
                        prepared.push(Prepared::Node(node));
                    } else if entry.size <= INLINE_MAX {
                        prepared.extend(self.read_file(&child(), &entry)?.map(Prepared::Node));
                    } else {
                        prepared.push(Prepared::Read(entry));
                    }
                }
                EntryKind::Symlink => {
                    add(&self.counts.symlinks, 1);
                    let node = Node::from_meta(&entry).expect("symlinks have nodes");
                    prepared.push(Prepared::Node(node));
                }
                EntryKind::Other => self.progress.warn(&format!(
                    "{}: skipped (not a file, directory or symlink)",
                    display(&child())
                )),
            }
        }
        Ok(prepared)
    }
}

/// Directories listed ahead of the walk, by path: listed in batches of siblings, each batch
/// one task on a blocking thread, handed over whole. A listing costs a round trip on a
/// network filesystem, and a few batches under way at once keep it busy; batches rather
/// than a task per directory, because most directories of a registry hold one link file,
/// and a hand-off between threads (a wake-up of the walk, of a blocking thread) costs more
/// than the listing.
pub(super) struct ListAhead {
    limit: usize,
    /// Each directory listed ahead: its batch, and its place in the batch.
    lists: HashMap<PathBuf, (u64, usize)>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
}

/// A batch of listings: under way, or done and being taken.
enum Batch {
    Listing(JoinHandle<Result<Vec<Result<Option<Listed>>>>>),
    Listed(Vec<Option<Result<Option<Listed>>>>),
}

/// Directories a batch lists, at most; a batch starts once there is room for a whole one.
pub(super) const BATCH: usize = 8;

impl Drop for ListAhead {
    fn drop(&mut self) {
        for batch in self.batches.values() {
            if let Batch::Listing(task) = batch {
                task.abort();
            }
        }
    }
}

impl ListAhead {
    pub fn new(limit: usize) -> Self {
        ListAhead {
            limit,
            lists: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
        }
    }

    /// How many directories the next batch may list: none until there is room for a whole
    /// batch (or nothing is under way), so batches do not dwindle to one directory each.
    pub fn room(&self) -> usize {
        let room = self.limit.saturating_sub(self.lists.len());
        match room >= BATCH.min(self.limit) || self.lists.is_empty() {
            true => room.min(BATCH),
            false => 0,
        }
    }

    /// Starts listing the directories of `batch` (path, tree in the parent snapshot), those
    /// not under way already, in one task.
    pub fn start(&mut self, archiver: &Arc<Archiver>, batch: Vec<(PathBuf, Option<Id>)>) {
        let id = self.next_batch;
        let mut todo = Vec::with_capacity(batch.len());
        for (rel, parent) in batch {
            if let Entry::Vacant(slot) = self.lists.entry(rel) {
                todo.push((slot.key().clone(), parent));
                slot.insert((id, todo.len() - 1));
            }
        }
        if !todo.is_empty() {
            self.next_batch += 1;
            let task = tokio::spawn(Arc::clone(archiver).list_batch(todo));
            self.batches.insert(id, Batch::Listing(task));
        }
    }

    /// The listing of `rel`: listed ahead, or listed now.
    pub async fn take(
        &mut self,
        archiver: &Arc<Archiver>,
        rel: PathBuf,
        parent: Option<Id>,
    ) -> Result<Option<Listed>> {
        let Some((id, at)) = self.lists.remove(&rel) else {
            return Arc::clone(archiver).list(rel, parent).await;
        };
        let batch = self
            .batches
            .get_mut(&id)
            .ok_or_else(|| Error::bug("a directory listed ahead has no batch"))?;
        if let Batch::Listing(task) = batch {
            let listed = task.await.joined("a listing worker")??;
            *batch = Batch::Listed(listed.into_iter().map(Some).collect());
        }
        let Batch::Listed(listings) = batch else {
            unreachable!("the batch was just listed");
        };
        let listed = listings.get_mut(at).and_then(Option::take);
        if listings.iter().all(Option::is_none) {
            self.batches.remove(&id);
        }
        listed.ok_or_else(|| Error::bug("a directory listed ahead was taken twice"))?
    }

    /// Whether the listing of `rel` is under way or done.
    pub fn holds(&self, rel: &Path) -> bool {
        self.lists.contains_key(rel)
    }

    /// Listings held: under way or done and not taken yet.
    pub fn len(&self) -> usize {
        self.lists.len()
    }
}
