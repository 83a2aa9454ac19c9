//! The restore pipeline: the snapshot walked depth first ([`Walk`], each directory's tree
//! read when the walk enters it) -> directories and symlinks made in walk order -> files
//! written by a bounded pool of writers, each verified (blob ids always, registry blobs also
//! against their sha256) before it gets its real name -> a directory's metadata applied when
//! the last entry under it is written, so its mtime stays.
//!
//! Memory follows the work in flight, not the size of the tree: the walk holds the
//! directories it is in, the pool `writers` files, and a directory waiting for its
//! metadata is held only by the files under it still being written.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stowage_backends::source::EntryMeta;
use stowage_backends::target::{FileSink, Target};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::progress::Progress;
use crate::registry;
use crate::repo::reader::{read_content, ContentRead};
use crate::repo::walk::{top_node, Walk};
use crate::repo::Repository;
use crate::runtime;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore into an existing directory of the same name.
    pub overwrite: bool,
    /// Files written at once.
    pub writers: usize,
    /// Restore only these paths (a partial restore).
    pub only: Option<Arc<registry::select::Selection>>,
    /// Leave aligned blocks of zeros as holes where the target can (a local filesystem).
    pub sparse: bool,
    /// Make the target equal to the snapshot: what it holds that the snapshot does not
    /// (under the restored directory) is removed. Not with `only`.
    pub delete: bool,
    /// Write and remove nothing; count what would be written and name what would be
    /// removed.
    pub dry_run: bool,
    /// Leave files that the target already holds with the snapshot's size and mtime (an
    /// interrupted restore resumes; rsync's quick check). Their metadata is still applied.
    pub skip_existing: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            writers: 4,
            only: None,
            sparse: false,
            delete: false,
            dry_run: false,
            skip_existing: false,
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
    /// Entries of the target the snapshot lacks, removed (`delete`; with `dry_run`, would
    /// be), and the first [`DELETIONS_NAMED`] of their paths (a directory's ends in `/`).
    pub deleted: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<String>,
    pub dry_run: bool,
    /// Files the target already held as the snapshot has them (`skip_existing`): not written
    /// again (counted in `files` and `bytes` too).
    pub skipped: u64,
}

/// Deleted paths a summary names at most.
pub const DELETIONS_NAMED: usize = 1000;

/// Directory trees loaded ahead of the walk: a registry holds hundreds of thousands of
/// directories with one small file each, where reading trees is most of the work.
const TREES_AHEAD: usize = 64;

/// What the walker and the writers share.
struct Restorer {
    repo: Arc<Repository>,
    only: Option<Arc<registry::select::Selection>>,
    target: Arc<dyn Target>,
    progress: Arc<dyn Progress>,
    /// Leave blocks of zeros as holes (`RestoreOptions::sparse`).
    sparse: bool,
    delete: bool,
    dry_run: bool,
    skip_existing: bool,
    skipped: AtomicU64,
    deleted: AtomicU64,
    deletions: Mutex<Vec<String>>,
    /// Registry blobs that did not match their digest when backed up (paths from the
    /// backed-up directory): restored as they were, with a warning.
    mismatched: std::collections::HashSet<String>,
    /// One permit per file being written.
    slots: Arc<Semaphore>,
    writers: u32,
    /// The first error; once set, the walk stops and nothing new starts.
    failed: Mutex<Option<Error>>,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
}

/// A restored directory whose metadata is still to come: held by the walk while it is in
/// the directory and by every file under it still being written; the last to let go
/// applies the metadata (and so a parent's comes after all of its children's).
struct OpenDir {
    rel: PathBuf,
    meta: EntryMeta,
    restorer: Arc<Restorer>,
    /// Kept until this directory is done.
    _parent: Option<Arc<OpenDir>>,
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        if self.restorer.has_failed() {
            return;
        }
        if self.restorer.dry_run {
            self.restorer.dirs.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.restorer.target.set_meta(&self.rel, &self.meta) {
            Ok(()) => {
                self.restorer.dirs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.restorer.fail(io_at(&self.rel)(e)),
        }
    }
}

/// Restores `snapshot` under the target: the backed-up directory comes back by its name.
pub async fn restore(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    target: Arc<dyn Target>,
    opts: RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary> {
    if opts.delete && opts.only.is_some() {
        return Err(Error::Usage(
            "--delete makes the target equal to the whole snapshot: it cannot be combined \
             with a partial restore"
                .into(),
        ));
    }
    let top = top_node(&repo, &snapshot.tree).await?;
    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&top.name.0));
    if !opts.overwrite
        && !opts.delete
        && !opts.dry_run
        && target
            .exists(&rel)
            .map_err(|e| Error::io(rel.display().to_string(), e))?
    {
        return Err(Error::Usage(format!(
            "{} already exists in the target; remove it or pass --overwrite",
            rel.display()
        )));
    }
    progress.phase("restore", Some(snapshot.summary.bytes));
    let writers = u32::try_from(opts.writers.clamp(1, 1024)).unwrap_or(1024);
    let restorer = Arc::new(Restorer {
        repo,
        only: opts.only.clone(),
        target,
        progress,
        sparse: opts.sparse,
        delete: opts.delete,
        dry_run: opts.dry_run,
        skip_existing: opts.skip_existing,
        skipped: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        deletions: Mutex::new(Vec::new()),
        mismatched: snapshot.summary.mismatched.iter().cloned().collect(),
        slots: Arc::new(Semaphore::new(writers as usize)),
        writers,
        failed: Mutex::new(None),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
    });
    let (root, rt) = (snapshot.tree, runtime::handle());
    let walker = Arc::clone(&restorer);
    runtime::blocking("the restore walker", move || walker.run(&rt, &root)).await?;
    if let Some(e) = restorer
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(e);
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let deletions =
        std::mem::take(&mut *restorer.deletions.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(RestoreSummary {
        files: get(&restorer.files),
        dirs: get(&restorer.dirs),
        symlinks: get(&restorer.symlinks),
        bytes: get(&restorer.bytes),
        verified_blobs: get(&restorer.verified),
        deleted: get(&restorer.deleted),
        deletions,
        dry_run: opts.dry_run,
        skipped: get(&restorer.skipped),
    })
}

fn io_at(rel: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(rel.display().to_string(), e)
}

impl Restorer {
    fn fail(&self, e: Error) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }

    fn has_failed(&self) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether a partial restore includes the entry at `rel`.
    fn selected(&self, rel: &Path, kind: NodeKind) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let path = rel.to_string_lossy();
        match kind {
            NodeKind::Dir => only.keeps_dir(&path),
            _ => only.keeps_file(&path),
        }
    }

    /// The walk, on a blocking thread: directories and symlinks here, in order; files
    /// handed to the writers. Returns once every writer is done; the first error is left in
    /// `failed`.
    fn run(self: &Arc<Self>, rt: &Handle, root: &Id) {
        // The directories the walk is in, innermost last.
        let mut open: Vec<Arc<OpenDir>> = Vec::new();
        if let Err(e) = self.walk(rt, root, &mut open) {
            self.fail(e);
        }
        drop(open);
        // Every file in flight finishes (or fails) before the restore returns.
        drop(runtime::wait(rt, self.slots.acquire_many(self.writers)));
    }

    fn walk(self: &Arc<Self>, rt: &Handle, root: &Id, open: &mut Vec<Arc<OpenDir>>) -> Result<()> {
        let mut walk = runtime::wait(rt, Walk::root(&self.repo, root))?
            .read_ahead(Arc::clone(&self.repo), TREES_AHEAD);
        let mut top = true;
        while let Some((rel, node)) = runtime::wait(rt, walk.next())? {
            if self.has_failed() {
                break;
            }
            while open.last().is_some_and(|dir| !rel.starts_with(&dir.rel)) {
                open.pop();
            }
            if !std::mem::take(&mut top) && !self.selected(&rel, node.kind) {
                walk.skip();
                continue;
            }
            match node.kind {
                NodeKind::Dir => {
                    if !self.dry_run {
                        self.target.create_dir(&rel).map_err(io_at(&rel))?;
                    }
                    if self.delete {
                        self.delete_extra(rt, &rel, &node)?;
                    }
                    let parent = open.last().cloned();
                    open.push(Arc::new(OpenDir {
                        rel,
                        meta: node.meta(),
                        restorer: Arc::clone(self),
                        _parent: parent,
                    }));
                }
                NodeKind::Symlink if self.dry_run => {
                    self.symlinks.fetch_add(1, Ordering::Relaxed);
                }
                NodeKind::File if self.dry_run => {
                    self.files.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(node.size, Ordering::Relaxed);
                }
                NodeKind::Symlink => {
                    let target = node.target.as_ref().ok_or_else(|| {
                        Error::corrupt(rel.display().to_string(), "symlink without target")
                    })?;
                    self.target
                        .symlink(&rel, &target.0)
                        .and_then(|()| self.target.set_meta(&rel, &node.meta()))
                        .map_err(io_at(&rel))?;
                    self.symlinks.fetch_add(1, Ordering::Relaxed);
                }
                NodeKind::File => self.start_file(rt, rel, node, open.last().cloned())?,
            }
        }
        Ok(())
    }

    /// Hands a file to a writer once one is free; its directory stays open until it is
    /// written.
    fn start_file(
        self: &Arc<Self>,
        rt: &Handle,
        rel: PathBuf,
        node: Node,
        dir: Option<Arc<OpenDir>>,
    ) -> Result<()> {
        let slot = runtime::wait(rt, Arc::clone(&self.slots).acquire_owned())
            .map_err(|_| Error::bug("the restore's writer slots closed"))?;
        let (me, handle) = (Arc::clone(self), rt.clone());
        let written = runtime::blocking("a restore writer", move || {
            let written = me.restore_file(&handle, &rel, &node);
            drop(dir);
            written
        });
        let me = Arc::clone(self);
        rt.spawn(async move {
            if let Err(e) = written.await.and_then(|r| r) {
                me.fail(e);
            }
            drop(slot);
        });
        Ok(())
    }

    /// Removes what the target's directory `rel` holds that the snapshot's directory `node`
    /// does not, or holds as the other kind (a directory where the snapshot has a file, or
    /// the reverse), before anything is restored into it.
    fn delete_extra(&self, rt: &Handle, rel: &Path, node: &Node) -> Result<()> {
        let subtree = node
            .subtree
            .ok_or_else(|| Error::corrupt(rel.display().to_string(), "directory without tree"))?;
        let tree = runtime::wait(rt, self.repo.load_tree(&subtree))?;
        let found = match self.target.list_dir(rel) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A dry run removed nothing: a file or a symlink may still stand where the
            // snapshot has this directory (a real run has replaced it by now).
            Err(e)
                if self.dry_run
                    && (e.kind() == std::io::ErrorKind::NotADirectory
                        || e.raw_os_error() == Some(libc::ELOOP)) =>
            {
                return Ok(())
            }
            Err(e) => return Err(io_at(rel)(e)),
        };
        for entry in found {
            let keep = tree
                .find(&entry.name)
                .is_some_and(|n| (n.kind == NodeKind::Dir) == entry.dir);
            if keep {
                continue;
            }
            let path = rel.join(std::ffi::OsStr::from_bytes(&entry.name));
            if !self.dry_run {
                self.target.remove_all(&path).map_err(io_at(&path))?;
            }
            self.deleted.fetch_add(1, Ordering::Relaxed);
            let mut named = self.deletions.lock().unwrap_or_else(|e| e.into_inner());
            if named.len() < DELETIONS_NAMED {
                let slash = if entry.dir { "/" } else { "" };
                named.push(format!("{}{slash}", path.display()));
            }
        }
        Ok(())
    }

    /// Whether the snapshot's summary names `rel` (from the target) as a registry blob that
    /// did not match its digest at backup time.
    fn mismatched_at_backup(&self, rel: &Path) -> bool {
        let mut inside = rel.components();
        inside.next(); // the backed-up directory
        self.mismatched
            .contains(&inside.as_path().display().to_string())
    }

    /// Whether the target already holds the file as the snapshot has it (size and mtime).
    fn already_there(&self, rel: &Path, node: &Node) -> Result<bool> {
        let stat = self.target.file_stat(rel).map_err(io_at(rel))?;
        Ok(stat.is_some_and(|(size, mtime)| {
            size == node.size && mtime.secs == node.mtime && mtime.nanos == node.mtime_ns
        }))
    }

    /// Writes one file under a temporary name, verifies it, then gives it its name.
    fn restore_file(&self, rt: &Handle, rel: &Path, node: &Node) -> Result<()> {
        if self.skip_existing && self.already_there(rel, node)? {
            self.target
                .set_meta(rel, &node.meta())
                .map_err(io_at(rel))?;
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.files.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(node.size, Ordering::Relaxed);
            self.progress.advance(node.size);
            return Ok(());
        }
        let sink = self.target.create_file(rel).map_err(io_at(rel))?;
        let mut sink = Sparse::new(sink, self.sparse);
        let read = read_content(
            &self.repo,
            rt,
            rel,
            node,
            registry::blob_digest(rel),
            |bytes| {
                sink.write(bytes).map_err(io_at(rel))?;
                self.progress.advance(bytes.len() as u64);
                Ok(())
            },
        );
        let content = match read {
            // Not the repository's fault: the registry held these bytes under this digest
            // when it was backed up, and the snapshot says so. They come back as they were.
            Err(Error::DigestMismatch { .. }) if self.mismatched_at_backup(rel) => {
                self.progress.warn(&format!(
                    "{}: restored as backed up; it did not match its digest then either",
                    rel.display()
                ));
                ContentRead {
                    bytes: node.size,
                    digest_verified: false,
                }
            }
            read => read?,
        };
        if content.digest_verified {
            self.verified.fetch_add(1, Ordering::Relaxed);
        }
        let mut sink = sink.finish().map_err(io_at(rel))?;
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

/// Holes are made of whole blocks of this size, aligned to it in the file.
const HOLE_BLOCK: usize = 4096;

/// Writes a file's bytes to its sink, leaving aligned blocks of zeros as holes when asked
/// (`--sparse`) and the target can; the bytes read back are the same either way.
struct Sparse {
    sink: Box<dyn FileSink>,
    sparse: bool,
    /// The bytes of the current block so far, when they came in pieces.
    partial: Vec<u8>,
    /// Zeros not written yet: skipped as one hole before the next write, or at the end.
    hole: u64,
}

impl Sparse {
    fn new(sink: Box<dyn FileSink>, sparse: bool) -> Self {
        Sparse {
            sink,
            sparse,
            partial: Vec::new(),
            hole: 0,
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while self.sparse && !bytes.is_empty() {
            if self.partial.is_empty() && bytes.len() >= HOLE_BLOCK {
                let (block, rest) = bytes.split_at(HOLE_BLOCK);
                self.block(block)?;
                bytes = rest;
                continue;
            }
            let take = (HOLE_BLOCK - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == HOLE_BLOCK {
                let block = std::mem::take(&mut self.partial);
                self.block(&block)?;
                self.partial = block;
                self.partial.clear();
            }
        }
        // Not sparse, or no longer (the target cannot make holes).
        self.sink.write_all(bytes)
    }

    /// One whole block, at a block boundary of the file.
    fn block(&mut self, block: &[u8]) -> std::io::Result<()> {
        if block.iter().all(|&b| b == 0) {
            self.hole += block.len() as u64;
            return Ok(());
        }
        self.skip_hole()?;
        self.sink.write_all(block)
    }

    fn skip_hole(&mut self) -> std::io::Result<()> {
        let hole = std::mem::take(&mut self.hole);
        if hole > 0 && !self.sink.skip(hole)? {
            // The target cannot make holes: the zeros are written, and no more holes tried.
            self.sparse = false;
            let zeros = [0u8; HOLE_BLOCK];
            for _ in 0..hole / HOLE_BLOCK as u64 {
                self.sink.write_all(&zeros)?;
            }
        }
        Ok(())
    }

    /// Writes what is pending (the last, partial block is written as it is).
    fn finish(mut self) -> std::io::Result<Box<dyn FileSink>> {
        self.skip_hole()?;
        let partial = std::mem::take(&mut self.partial);
        self.sink.write_all(&partial)?;
        Ok(self.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink into memory; holes, when it takes them, are zeros it did not get written.
    struct Memory {
        bytes: Arc<Mutex<Vec<u8>>>,
        holes: bool,
        skipped: Arc<AtomicU64>,
    }

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl FileSink for Memory {
        fn commit(self: Box<Self>) -> std::io::Result<()> {
            Ok(())
        }
        fn skip(&mut self, len: u64) -> std::io::Result<bool> {
            if self.holes {
                self.skipped.fetch_add(len, Ordering::Relaxed);
                let mut bytes = self.bytes.lock().expect("lock");
                let at = bytes.len() + len as usize;
                bytes.resize(at, 0);
            }
            Ok(self.holes)
        }
    }

    #[test]
    fn sparse_writes_give_the_same_bytes_with_or_without_holes() {
        let mut content = vec![0u8; 10_000];
        content.extend(b"data");
        content.extend(vec![0u8; 9_000]);
        for holes in [true, false] {
            let bytes = Arc::new(Mutex::new(Vec::new()));
            let skipped = Arc::new(AtomicU64::new(0));
            let sink = Memory {
                bytes: Arc::clone(&bytes),
                holes,
                skipped: Arc::clone(&skipped),
            };
            let mut sparse = Sparse::new(Box::new(sink), true);
            // In pieces that straddle block boundaries.
            for piece in content.chunks(1_000) {
                sparse.write(piece).expect("write");
            }
            sparse.finish().expect("finish");
            assert_eq!(*bytes.lock().expect("lock"), content, "holes {holes}");
            // Blocks 0, 1 and 3 are all zeros; block 2 holds the data; the last one, partial,
            // is written.
            let expected = if holes { 3 * HOLE_BLOCK as u64 } else { 0 };
            assert_eq!(skipped.load(Ordering::Relaxed), expected);
        }
    }
}
