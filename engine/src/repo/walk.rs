//! Walking a snapshot's trees. Two walkers and their steps, so the safety checks on names
//! live in one place:
//!
//! - [`Walk`]: one snapshot's entries with their paths, depth first in name order, each
//!   directory's tree loaded when the walk enters it (memory follows the depth, not the
//!   size of the tree). `ls`, tar streams, the original tar and check's damage map use it.
//! - [`each_tree`]: every distinct tree that some snapshots reach, loaded in parallel, for
//!   what needs trees rather than paths (what prune and copy keep, what check reads).
//! - The steps: a snapshot's [`top_node`], a directory's tree ([`load_dir`], refusing names
//!   that would leave it), and a node by path ([`find`]).
//!
//! Restore walks with the same steps but concurrently (directories restored side by side),
//! and diff walks two snapshots side by side; both are shaped by what they do.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::error::{Error, Joined, Result};
use crate::extsort::{sort_memory, Run, RunWriter, Sorter};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::index::{placed, unplaced, PLACED};
use crate::repo::Repository;

/// Trees [`each_tree`] loads at once.
const TREE_LOADS: usize = 16;

/// One snapshot's entries, depth first in name order: a directory comes before its
/// entries. A directory's tree is loaded when the walk goes on past it, unless
/// [`skip`](Walk::skip) says not to enter it; with [`read_ahead`](Walk::read_ahead), the
/// trees of the directories it will enter next are loaded meanwhile, in parallel.
pub struct Walk<'r> {
    repo: &'r Repository,
    /// The directories being walked, innermost last.
    open: Vec<Level>,
    /// The entry to give next: the start, before the first call.
    start: Option<(PathBuf, Node)>,
    /// The directory given last, entered on the next call.
    enter: Option<(PathBuf, Node)>,
    ahead: Option<ReadAhead>,
}

/// A directory being walked.
struct Level {
    rel: PathBuf,
    /// Its entries still to come.
    entries: std::vec::IntoIter<Node>,
    /// How many of them read-ahead has looked at.
    ahead_from: usize,
}

/// Trees loaded ahead of the walk, by id.
struct ReadAhead {
    repo: Arc<Repository>,
    limit: usize,
    loads: HashMap<Id, JoinHandle<Result<Tree>>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for load in self.loads.values() {
            load.abort();
        }
    }
}

impl<'r> Walk<'r> {
    /// Walks the entry at `path` (`/`-separated, from the snapshot's top directory; the
    /// whole snapshot when empty) and everything under it.
    pub async fn at(repo: &'r Repository, snapshot: &Snapshot, path: &str) -> Result<Self> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return Walk::snapshot(repo, snapshot).await;
        }
        let node = find(repo, snapshot, path).await?;
        Ok(Walk::new(repo, parts.iter().collect(), node))
    }

    /// Walks `node`, at `rel`, and everything under it.
    pub(crate) fn new(repo: &'r Repository, rel: PathBuf, node: Node) -> Self {
        Walk {
            repo,
            open: Vec::new(),
            start: Some((rel, node)),
            enter: None,
            ahead: None,
        }
    }

    /// Walks the whole snapshot, from its top directory.
    pub async fn snapshot(repo: &'r Repository, snapshot: &Snapshot) -> Result<Self> {
        Walk::root(repo, &snapshot.tree).await
    }

    /// Walks the snapshot whose root tree is `root`, from its top directory.
    pub(crate) async fn root(repo: &'r Repository, root: &Id) -> Result<Self> {
        let top = top_node(repo, root).await?;
        let rel = PathBuf::from(OsStr::from_bytes(&top.name.0));
        Ok(Walk::new(repo, rel, top))
    }

    /// Loads up to `limit` directory trees ahead of the walk, as tasks on the runtime (so
    /// on every core), those of the innermost directory first: for walks that do little
    /// per entry themselves, such as a restore of many small files.
    pub fn read_ahead(mut self, repo: Arc<Repository>, limit: usize) -> Self {
        self.ahead = Some(ReadAhead {
            repo,
            limit: limit.max(1),
            loads: HashMap::new(),
        });
        self
    }

    /// The next entry and its path, `None` at the end. An error (a directory's tree that
    /// cannot be read) leaves that directory out; the walk can go on after it.
    pub async fn next(&mut self) -> Result<Option<(PathBuf, Node)>> {
        if let Some((rel, node)) = self.enter.take() {
            let tree = self.enter_dir(&rel, &node).await?;
            self.open.push(Level {
                rel,
                entries: tree.nodes.into_iter(),
                ahead_from: 0,
            });
            self.top_up();
        }
        let (rel, node) = match self.start.take() {
            Some(start) => start,
            None => loop {
                let Some(level) = self.open.last_mut() else {
                    return Ok(None);
                };
                match level.entries.next() {
                    Some(node) => {
                        level.ahead_from = level.ahead_from.saturating_sub(1);
                        break (level.rel.join(OsStr::from_bytes(&node.name.0)), node);
                    }
                    None => {
                        self.open.pop();
                    }
                }
            },
        };
        if node.kind == NodeKind::Dir {
            self.enter = Some((rel.clone(), node.clone()));
        }
        Ok(Some((rel, node)))
    }

    /// Does not enter the directory [`next`](Walk::next) gave last.
    pub fn skip(&mut self) {
        let skipped = self.enter.take().and_then(|(_, node)| node.subtree);
        if let (Some(ahead), Some(subtree)) = (&mut self.ahead, skipped) {
            if let Some(load) = ahead.loads.remove(&subtree) {
                load.abort();
            }
        }
    }

    /// The tree of the directory the walk enters: read ahead, or loaded now.
    async fn enter_dir(&mut self, rel: &Path, node: &Node) -> Result<Tree> {
        let ahead = self.ahead.as_mut().zip(node.subtree);
        match ahead.and_then(|(ahead, subtree)| Some((ahead.loads.remove(&subtree)?, subtree))) {
            Some((load, subtree)) => safe_names(subtree, load.await.joined("a tree read ahead")??),
            None => load_dir(self.repo, rel, node).await,
        }
    }

    /// Starts loading the trees of the directories the walk will enter next, up to the
    /// limit: the innermost directory's entries first.
    fn top_up(&mut self) {
        let Some(ahead) = &mut self.ahead else {
            return;
        };
        for level in self.open.iter_mut().rev() {
            let rest = level.entries.as_slice();
            while let Some(node) = rest.get(level.ahead_from) {
                if ahead.loads.len() >= ahead.limit {
                    return;
                }
                level.ahead_from += 1;
                let Some(subtree) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
                    continue;
                };
                if let Entry::Vacant(slot) = ahead.loads.entry(subtree) {
                    let repo = Arc::clone(&ahead.repo);
                    slot.insert(tokio::spawn(async move { repo.load_tree(&subtree).await }));
                }
            }
        }
    }
}

/// Calls `visit` once with every distinct tree reached from `roots`: the tag of a root that
/// reaches it (of those reaching it fewest levels down, the least), its id, and the tree or
/// why it could not be read. Returns how many trees were visited. An error from `visit` ends
/// the walk.
///
/// Memory stays bounded whatever the number of trees: the walk goes level by level, each
/// level's new trees found by merging the sorted ids of the level with the sorted ids
/// visited before (both spill to temporary files past `extsort::sort_memory`), and loaded in
/// the order they lie in their packs, [`TREE_LOADS`] at once, so each pack window is read
/// once. The price is reading and writing the visited ids once a level: depth x trees x 32
/// bytes of temporary-file traffic (200 MB for a registry of half a million trees, 12 deep;
/// a directory chain thousands deep would want the visited runs searched instead).
pub(crate) async fn each_tree(
    repo: &Repository,
    roots: impl IntoIterator<Item = (Id, u32)>,
    mut visit: impl FnMut(u32, Id, Result<Tree>) -> Result<()>,
) -> Result<u64> {
    let mut level = Sorter::<TAGGED>::new(sort_memory());
    for (id, tag) in roots {
        level.push(tagged(&id, tag))?;
    }
    let mut visited = Run::<32>::write(std::iter::empty(), sort_memory())?;
    let mut trees = 0;
    loop {
        // The level's trees not visited before, by where they are stored; the visited set
        // grows by them.
        let mut by_place = Sorter::<PLACED>::new(sort_memory());
        let mut fresh = 0;
        let mut before = visited.reader()?.peekable();
        let mut last: Option<Id> = None;
        let mut next_visited = RunWriter::<32>::new(sort_memory());
        for record in level.sorted()? {
            let (id, tag) = untagged(&record?);
            if last == Some(id) {
                continue; // the same tree from a root with a greater tag
            }
            last = Some(id);
            let mut seen = false;
            while let Some(old) = before.next_if(|old| old.as_ref().map_or(true, |o| *o <= id.0)) {
                let old = old?;
                seen |= old == id.0;
                next_visited.push(old)?;
            }
            if seen {
                continue;
            }
            next_visited.push(id.0)?;
            fresh += 1;
            match repo.index().lookup(&id)? {
                Some(loc) => by_place.push(placed(&loc, tag))?,
                None => visit(tag, id, Err(Error::MissingBlob(id)))?,
            }
        }
        for old in before {
            next_visited.push(old?)?;
        }
        visited = next_visited.finish()?;
        if fresh == 0 {
            return Ok(trees);
        }
        trees += fresh;

        let mut next = Sorter::<TAGGED>::new(sort_memory());
        let mut loads = futures::stream::iter(by_place.sorted()?)
            .map(|record| async move {
                let (loc, tag) = unplaced(&record?)?;
                let id = loc.entry.id;
                Ok::<_, Error>((tag, id, repo.load_tree_at(&id, &loc).await))
            })
            .buffered(TREE_LOADS);
        while let Some(loaded) = loads.next().await {
            let (tag, id, tree) = loaded?;
            if let Ok(tree) = &tree {
                for sub in tree.nodes.iter().filter_map(|n| n.subtree) {
                    next.push(tagged(&sub, tag))?;
                }
            }
            visit(tag, id, tree)?;
        }
        level = next;
    }
}

/// A tree id and the tag of the root that reached it: sorted by id, then tag.
const TAGGED: usize = 36;

fn tagged(id: &Id, tag: u32) -> [u8; TAGGED] {
    let mut r = [0; TAGGED];
    r[..32].copy_from_slice(&id.0);
    r[32..].copy_from_slice(&tag.to_be_bytes());
    r
}

fn untagged(r: &[u8; TAGGED]) -> (Id, u32) {
    let (id, tag) = r.split_at(32);
    (
        Id(id.try_into().expect("32 bytes")),
        u32::from_be_bytes(tag.try_into().expect("4 bytes")),
    )
}

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
pub(crate) async fn load_dir(repo: &Repository, rel: &Path, node: &Node) -> Result<Tree> {
    let subtree = node
        .subtree
        .ok_or_else(|| Error::corrupt(rel.display().to_string(), "directory without tree"))?;
    safe_names(subtree, repo.load_tree(&subtree).await?)
}

/// `tree` (with id `id`), refused if an entry's name would leave its directory.
fn safe_names(id: Id, tree: Tree) -> Result<Tree> {
    if let Some(bad) = tree.nodes.iter().find(|n| !safe_name(&n.name.0)) {
        return Err(Error::corrupt(
            format!("tree {id}"),
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
