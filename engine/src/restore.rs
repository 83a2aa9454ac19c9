//! The restore pipeline: snapshot -> trees -> directories, then files in parallel, each
//! verified (blob ids always, registry blobs also against their sha256) before it gets its
//! real name -> directory metadata last, deepest first, so their mtimes stay.

use std::io::Write;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use stowage_backends::target::Target;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::index::Location;
use crate::pack::Pack;
use crate::progress::Progress;
use crate::registry;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Content, Node, NodeKind, Tree};

/// One read from a pack spans at most this much (or one blob, when that is larger).
const MAX_READ: u64 = 8 << 20;

/// Splits `blobs` into runs that each are one contiguous range of one pack, up to
/// `max_read` bytes.
fn adjacent_runs(blobs: &[(crate::id::Id, Location)], max_read: u64) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, (_, loc)) in blobs.iter().enumerate() {
        let extends = runs.last().is_some_and(|run| {
            let (start, prev) = (&blobs[run.start].1, &blobs[i - 1].1);
            prev.pack == loc.pack
                && prev.entry.range().end == loc.entry.range().start
                && loc.entry.range().end - start.entry.range().start <= max_read
        });
        match runs.last_mut() {
            Some(run) if extends => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore into an existing directory of the same name.
    pub overwrite: bool,
    /// Files written at once.
    pub writers: usize,
    /// Restore only these paths (a partial restore).
    pub only: Option<Arc<crate::select::Selection>>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            writers: 4,
            only: None,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Registry blobs whose sha256 was checked against their digest.
    pub verified_blobs: u64,
}

struct Restorer {
    repo: Arc<Repository>,
    only: Option<Arc<crate::select::Selection>>,
    target: Arc<dyn Target>,
    progress: Arc<dyn Progress>,
    slots: Arc<Semaphore>,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
}

/// Restores `snapshot` under the target: the backed-up directory comes back by its name.
pub async fn restore(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    target: Arc<dyn Target>,
    opts: RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary> {
    let top = top_node(&repo, &snapshot.tree).await?;
    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&top.name.0));
    if !opts.overwrite
        && target
            .exists(&rel)
            .map_err(|e| Error::io(rel.display().to_string(), e))?
    {
        return Err(Error::Invalid(format!(
            "{} already exists in the target; remove it or pass --overwrite",
            rel.display()
        )));
    }
    progress.phase("restore", Some(snapshot.summary.bytes));
    let restorer = Arc::new(Restorer {
        repo,
        only: opts.only.clone(),
        target,
        progress,
        slots: Arc::new(Semaphore::new(opts.writers.max(1))),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
    });
    Arc::clone(&restorer).restore_node(rel, top).await?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(RestoreSummary {
        files: get(&restorer.files),
        dirs: get(&restorer.dirs),
        symlinks: get(&restorer.symlinks),
        bytes: get(&restorer.bytes),
        verified_blobs: get(&restorer.verified),
    })
}

/// The single node of a snapshot's root tree (FORMAT.md, "Snapshots"): the backed-up
/// directory, restored by its name.
pub(crate) async fn top_node(repo: &Repository, root: &crate::id::Id) -> Result<Node> {
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

fn io_at(rel: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(rel.display().to_string(), e)
}

impl Restorer {
    /// Whether a partial restore includes `child` of the directory at `rel`.
    fn selected(&self, rel: &Path, child: &Node) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let path = rel.join(std::ffi::OsStr::from_bytes(&child.name.0));
        let path = path.to_string_lossy();
        match child.kind {
            NodeKind::Dir => only.keeps_dir(&path),
            _ => only.keeps_file(&path),
        }
    }

    fn restore_node(self: Arc<Self>, rel: PathBuf, node: Node) -> BoxFuture<'static, Result<()>> {
        async move {
            match node.kind {
                NodeKind::Dir => self.restore_dir(rel, node).await,
                NodeKind::Symlink => {
                    let target = node.target.clone().ok_or_else(|| {
                        Error::corrupt(rel.display().to_string(), "symlink without target")
                    })?;
                    let (at, meta) = (rel.clone(), node.meta());
                    self.on_target(&rel, move |t| {
                        t.symlink(&at, &target.0)?;
                        t.set_meta(&at, &meta)
                    })
                    .await?;
                    self.symlinks.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                NodeKind::File => {
                    let _slot = Arc::clone(&self.slots)
                        .acquire_owned()
                        .await
                        .expect("semaphore open");
                    let me = Arc::clone(&self);
                    let handle = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || me.restore_file(&handle, &rel, &node))
                        .await
                        .map_err(|e| Error::Invalid(format!("worker panicked: {e}")))?
                }
            }
        }
        .boxed()
    }

    /// Runs a target operation (blocking: a network target waits on its server) off the
    /// async workers, within the restore's slots. Thousands of directories are restored at
    /// once; calling the target from their tasks directly would tie up every worker.
    async fn on_target<T: Send + 'static>(
        &self,
        rel: &Path,
        op: impl FnOnce(&dyn Target) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let target = Arc::clone(&self.target);
        tokio::task::spawn_blocking(move || op(target.as_ref()))
            .await
            .map_err(|e| Error::Invalid(format!("worker panicked: {e}")))?
            .map_err(io_at(rel))
    }

    async fn restore_dir(self: Arc<Self>, rel: PathBuf, node: Node) -> Result<()> {
        let at = rel.clone();
        self.on_target(&rel, move |t| t.create_dir(&at)).await?;
        let tree = load_dir(&self.repo, &rel, &node).await?;
        let children: Vec<_> = tree
            .nodes
            .into_iter()
            .filter(|child| self.selected(&rel, child))
            .map(|child| {
                let child_rel = rel.join(std::ffi::OsStr::from_bytes(&child.name.0));
                tokio::spawn(Arc::clone(&self).restore_node(child_rel, child))
            })
            .collect();
        // Wait for every child even after a failure, so no task writes after we return.
        let mut first_error = None;
        for child in children {
            let result = child
                .await
                .map_err(|e| Error::Invalid(format!("task failed: {e}")))
                .and_then(|r| r);
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let (at, meta) = (rel.clone(), node.meta());
        self.on_target(&rel, move |t| t.set_meta(&at, &meta))
            .await?;
        self.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one file under a temporary name, verifies it, then gives it its name.
    fn restore_file(&self, rt: &tokio::runtime::Handle, rel: &Path, node: &Node) -> Result<()> {
        let mut sink = self.target.create_file(rel).map_err(io_at(rel))?;
        let content = read_content(&self.repo, rt, rel, node, |bytes| {
            sink.write_all(bytes).map_err(io_at(rel))?;
            self.progress.advance(bytes.len() as u64);
            Ok(())
        })?;
        if content.digest_verified {
            self.verified.fetch_add(1, Ordering::Relaxed);
        }
        sink.flush().map_err(io_at(rel))?;
        sink.commit().map_err(io_at(rel))?;
        self.target
            .set_meta(rel, &node.meta())
            .map_err(io_at(rel))?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(content.bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// Gzip re-creations at once. Each is CPU-bound and holds a piece of plaintext (~16 MiB)
/// and preflate-rs's state: more of them than there are cores adds memory and no speed.
static REBUILDS: std::sync::LazyLock<Semaphore> = std::sync::LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
});

/// Reads the data blobs `ids` in order and hands each one's plaintext to `take`, verified
/// against its id. Blobs stored back to back in one pack come in one read: a layer's chunks
/// were packed in order, so a whole file is a few requests, not one per chunk.
fn read_blobs(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    ids: &[crate::id::Id],
    take: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut blobs = Vec::with_capacity(ids.len());
    let mut plain = Vec::new();
    for id in ids {
        let loc = repo.index().lookup(id)?.ok_or(Error::MissingBlob(*id))?;
        blobs.push((*id, loc));
    }
    for run in adjacent_runs(&blobs, MAX_READ) {
        let run = &blobs[run];
        let (first, last) = (&run[0].1, &run[run.len() - 1].1);
        let range = first.entry.range().start..last.entry.range().end;
        let bytes = rt.block_on(
            repo.store()
                .get_range(&Pack::key(&first.pack), range.clone()),
        )?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corrupt(
                format!("pack {}", first.pack),
                "cut short (pack truncated)",
            ));
        }
        for (id, loc) in run {
            let at = (loc.entry.range().start - range.start) as usize;
            let sealed = &bytes[at..at + loc.entry.length as usize];
            repo.decode_blob_into(id, loc, sealed, &mut plain)?;
            take(&plain)?;
        }
    }
    Ok(())
}

/// What [`read_content`] read and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentRead {
    pub bytes: u64,
    /// The file is a registry blob and its sha256 matched the digest in its path.
    pub digest_verified: bool,
}

/// Reads a file node's content and hands it to `write` blob by blob, verifying it as
/// FORMAT.md ("Restore verification") asks: every blob against its id (blobs stored back to
/// back in one pack come in one ranged read), the total against the node's size (`write`
/// never gets more than that), and a registry blob (by its path `rel`) against the sha256
/// digest its path names.
///
/// `write` sees the bytes before the size and digest checks are done, so a caller must not
/// make them final until this returns `Ok`: a directory restore keeps the file under its
/// temporary name, a tar stream holds back the entry's last bytes. Blocking: reads through
/// `rt`, so call it off the async runtime.
pub(crate) fn read_content(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    rel: &Path,
    node: &Node,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ContentRead> {
    let digest = registry::blob_digest(rel);
    let mut sha = digest.map(|_| Sha256::new());
    let mut written = 0u64;
    let mut take = |bytes: &[u8]| -> Result<()> {
        if written + bytes.len() as u64 > node.size {
            return Err(Error::corrupt(
                rel.display().to_string(),
                format!(
                    "content holds more than the {} bytes the snapshot says",
                    node.size
                ),
            ));
        }
        if let Some(sha) = sha.as_mut() {
            sha.update(bytes);
        }
        write(bytes)?;
        written += bytes.len() as u64;
        Ok(())
    };
    match &node.content {
        Some(Content::Inline(bytes)) => take(&bytes.0)?,
        Some(Content::Chunks(ids)) => read_blobs(repo, rt, ids, &mut take)?,
        Some(Content::Gzip(gzip)) => {
            let _permit = rt.block_on(REBUILDS.acquire()).expect("semaphore open");
            let what = rel.display().to_string();
            let mut recipe = Vec::new();
            read_blobs(repo, rt, &gzip.recipe, &mut |bytes| {
                recipe.extend_from_slice(bytes);
                Ok(())
            })?;
            let recipe = crate::gzip::Recipe::decode(&recipe, &what)?;
            take(&recipe.header)?;
            let mut rebuild = crate::gzip::Rebuilder::new(recipe, what);
            read_blobs(repo, rt, &gzip.plain, &mut |plain| {
                rebuild.push(plain, &mut take)
            })?;
            rebuild.finish(&mut take)?;
            read_blobs(repo, rt, &gzip.tail, &mut take)?;
        }
        None => {}
    }
    if written != node.size {
        return Err(Error::corrupt(
            rel.display().to_string(),
            format!(
                "restored {written} bytes where the snapshot says {}",
                node.size
            ),
        ));
    }
    let digest_verified = match (digest, sha) {
        (Some(expected), Some(sha)) => {
            let actual: [u8; 32] = sha.finalize().into();
            if actual != expected {
                return Err(Error::DigestMismatch {
                    path: rel.display().to_string(),
                    digest: hex::encode(expected),
                });
            }
            true
        }
        _ => false,
    };
    Ok(ContentRead {
        bytes: written,
        digest_verified,
    })
}

#[cfg(test)]
mod tests {
    use super::{adjacent_runs, safe_name};
    use crate::id::Id;
    use crate::index::Location;
    use crate::pack::{BlobKind, PackEntry};

    fn at(pack: u8, offset: u32, length: u32) -> (Id, Location) {
        let entry = PackEntry {
            kind: BlobKind::Data,
            compression: crate::compress::Compression::None,
            id: Id::hash_of(&[pack]),
            offset,
            length,
            raw_length: length,
        };
        let pack = Id::hash_of(&[pack, 0xff]);
        (entry.id, Location { pack, entry })
    }

    #[test]
    fn adjacent_blobs_of_one_pack_are_read_together() {
        let blobs = [
            at(1, 0, 100),
            at(1, 100, 50),
            at(1, 150, 10),
            at(1, 500, 10), // a gap
            at(2, 510, 10), // another pack
            at(2, 520, 300),
            at(2, 820, 100), // the run would span 410 bytes
        ];
        assert_eq!(adjacent_runs(&blobs, 400), [0..3, 3..4, 4..6, 6..7]);
        assert!(adjacent_runs(&[], 400).is_empty());
    }

    #[test]
    fn names_that_escape_are_unsafe() {
        assert!(safe_name(b"data"));
        assert!(safe_name(b"..data"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
