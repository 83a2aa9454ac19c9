//! Walks a source and turns it into trees: directories as tasks, file contents on blocking
//! threads, unchanged files taken from the parent snapshot or the registry digest map.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use stowage_backends::source::{EntryKind, EntryMeta, Source};
use tokio::sync::Semaphore;

use super::BackupOptions;
use crate::error::{Error, Joined, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::tree::{Content, GzipContent, InlineBytes, Node, NodeKind, Tree, INLINE_MAX};
use crate::gzip;
use crate::progress::Progress;
use crate::registry;
use crate::repo::index::DigestRecord;
use crate::repo::packer::Packer;
use crate::repo::Repository;

/// Counts that end up in the snapshot's summary.
#[derive(Default)]
pub struct Counts {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub symlinks: AtomicU64,
    pub bytes: AtomicU64,
    pub files_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub files_unchanged: AtomicU64,
    /// Registry blobs kept as gzip content: whole, or re-created in part (the rest as is).
    pub gzip_layers: AtomicU64,
    pub gzip_partial: AtomicU64,
    /// Gzip registry blobs of which nothing could be re-created: stored as they are.
    pub gzip_fallbacks: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub struct Archiver {
    pub repo: Arc<Repository>,
    pub source: Arc<dyn Source>,
    pub packer: Arc<Packer>,
    pub progress: Arc<dyn Progress>,
    pub opts: BackupOptions,
    pub counts: Counts,
    /// The time (seconds, nanoseconds) from which a timestamp in the parent snapshot proves
    /// nothing: a file changed in the same clock tick as the parent backup read it would
    /// still match.
    racy_since: Option<(i64, u32)>,
    /// Files whose content is being read at once.
    file_slots: Arc<Semaphore>,
    /// Directory listings under way at once (high for network filesystems).
    dir_slots: Arc<Semaphore>,
    /// Whether gzip registry blobs are kept as gzip content.
    gzip: bool,
    /// Chunker buffers, one per reader, reused from file to file.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// A directory entry's node: known at once (unchanged files, symlinks) or being made.
enum Child {
    Ready(Node),
    Task(tokio::task::JoinHandle<Result<Node>>),
}

fn display(rel: &Path) -> String {
    rel.display().to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .joined("a backup worker")?
}

impl Archiver {
    pub fn new(
        repo: Arc<Repository>,
        source: Arc<dyn Source>,
        packer: Arc<Packer>,
        progress: Arc<dyn Progress>,
        opts: BackupOptions,
        racy_since: Option<(i64, u32)>,
    ) -> Arc<Self> {
        let readers = opts.readers.max(1);
        let gzip = opts.gzip.unwrap_or(repo.config().gzip);
        Arc::new(Archiver {
            gzip,
            repo,
            source,
            packer,
            progress,
            opts,
            counts: Counts::default(),
            racy_since,
            file_slots: Arc::new(Semaphore::new(readers)),
            dir_slots: Arc::new(Semaphore::new(8)),
            buffers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Lists the directories `dirs` and, depth first, as much below them as a task's budget
    /// allows, in a few blocking tasks: one hand-off per directory would cost more than a
    /// cached listing takes, while several tasks keep high-latency mounts busy.
    async fn list_dirs(&self, dirs: Vec<PathBuf>) -> Vec<Result<Listing>> {
        const TASKS: usize = 8;
        let per_task = dirs.len().div_ceil(TASKS).max(4);
        let mut batches = Vec::new();
        let mut dirs = dirs.into_iter().peekable();
        while dirs.peek().is_some() {
            let batch: Vec<PathBuf> = dirs.by_ref().take(per_task).collect();
            let source = Arc::clone(&self.source);
            let slots = Arc::clone(&self.dir_slots);
            let budget = self.opts.listing_budget;
            batches.push(tokio::spawn(async move {
                let _slot = slots.acquire().await.expect("semaphore open");
                let listed = tokio::task::spawn_blocking(move || {
                    let mut budget = budget;
                    batch
                        .iter()
                        .map(|at| list_tree(source.as_ref(), at, &mut budget, 0))
                        .collect::<Vec<_>>()
                })
                .await;
                listed.joined("a listing worker")
            }));
        }
        let mut listings = Vec::new();
        for batch in batches {
            match batch.await {
                Ok(Ok(listed)) => listings.extend(listed),
                Ok(Err(e)) => listings.push(Err(e)),
                Err(e) => listings.push(Err(e).joined("a listing worker")),
            }
        }
        listings
    }

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
                            let node = blocking(move || me.read_file(&child_rel, &entry)).await;
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

    /// The listings of the subdirectories among `entries`: those listed with their parent,
    /// and the others listed now.
    async fn complete(
        &self,
        rel: &Path,
        entries: &[EntryMeta],
        listed: Vec<Option<Result<Listing>>>,
    ) -> Vec<Result<Listing>> {
        let names = entries.iter().filter(|e| e.kind == EntryKind::Dir);
        let missing: Vec<PathBuf> = names
            .zip(&listed)
            .filter(|(_, listing)| listing.is_none())
            .map(|(e, _)| rel.join(std::ffi::OsStr::from_bytes(&e.name)))
            .collect();
        let mut fresh = self.list_dirs(missing).await.into_iter();
        listed
            .into_iter()
            .map(|listing| listing.unwrap_or_else(|| fresh.next().expect("one per missing")))
            .collect()
    }

    /// Whether `previous` (from the parent snapshot) still describes the file.
    fn unchanged(&self, meta: &EntryMeta, previous: &Node) -> bool {
        let racy = self.racy_since.is_some_and(|since| {
            racy(previous.mtime, previous.mtime_ns, since)
                || racy(previous.ctime, previous.ctime_ns, since)
        });
        !self.opts.force
            && !racy
            && previous.kind == NodeKind::File
            && previous.size == meta.size
            && (previous.mtime, previous.mtime_ns) == (meta.mtime.secs, meta.mtime.nanos)
            && (self.opts.ignore_ctime
                || (previous.ctime, previous.ctime_ns) == (meta.ctime.secs, meta.ctime.nanos))
            && (self.opts.ignore_inode || previous.inode == meta.inode)
    }

    /// Content that need not be read again: from the parent snapshot, or, for registry
    /// blobs (content-addressed, immutable), from the digest map.
    fn known_content(
        &self,
        rel: &Path,
        meta: &EntryMeta,
        previous: Option<&Node>,
    ) -> Result<Option<Content>> {
        // Stored as it is, to be read again for gzip content (`optimize`).
        let reencode = |c: &Content| {
            self.opts.reencode
                && matches!(c, Content::Chunks(_))
                && meta.size >= GZIP_MIN
                && registry::blob_digest(rel).is_some()
        };
        if let Some(prev) = previous.filter(|p| self.unchanged(meta, p)) {
            match &prev.content {
                Some(c) if reencode(c) => {}
                // Inline content has no blobs: always stored.
                Some(c) if self.packer.stored(c.blobs())? => return Ok(Some(c.clone())),
                _ => {}
            }
        }
        if self.opts.force {
            return Ok(None);
        }
        if let Some(digest) = registry::blob_digest(rel) {
            if let Some(record) = self.repo.index().digest(&digest)? {
                if record.size == meta.size
                    && !reencode(&record.content)
                    && self.packer.stored(record.content.blobs())?
                {
                    return Ok(Some(record.content));
                }
            }
        }
        Ok(None)
    }

    /// The file's node when its content need not be read.
    fn known_file(
        &self,
        rel: &Path,
        meta: &EntryMeta,
        previous: Option<&Node>,
    ) -> Result<Option<Node>> {
        let Some(content) = self.known_content(rel, meta, previous)? else {
            return Ok(None);
        };
        let mut node = Node::from_meta(meta).expect("files have nodes");
        add(&self.counts.files, 1);
        add(&self.counts.files_unchanged, 1);
        add(&self.counts.bytes, meta.size);
        self.progress.advance(meta.size);
        node.content = Some(content);
        Ok(Some(node))
    }

    /// Reads the file's content into blobs.
    fn read_file(&self, rel: &Path, meta: &EntryMeta) -> Result<Node> {
        let mut node = Node::from_meta(meta).expect("files have nodes");
        add(&self.counts.files, 1);
        let reader = self
            .source
            .open(rel)
            .map_err(|e| Error::io(display(rel), e))?;
        let (content, size) = self.read_content(rel, reader, meta.size)?;
        if size != meta.size {
            self.progress.warn(&format!(
                "{}: changed while being read ({} bytes listed, {size} read)",
                display(rel),
                meta.size
            ));
        }
        add(&self.counts.files_read, 1);
        add(&self.counts.bytes_read, size);
        add(&self.counts.bytes, size);
        node.size = size;
        node.content = Some(content);
        Ok(node)
    }

    /// Reads a file: inline when tiny, else chunked into data blobs.
    fn read_content(
        &self,
        rel: &Path,
        mut reader: Box<dyn Read + Send>,
        listed: u64,
    ) -> Result<(Content, u64)> {
        let io_err = |e| Error::io(display(rel), e);
        if listed <= INLINE_MAX {
            let mut bytes = Vec::new();
            (&mut reader)
                .take(INLINE_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            if bytes.len() as u64 <= INLINE_MAX {
                self.progress.advance(bytes.len() as u64);
                let size = bytes.len() as u64;
                return Ok((Content::Inline(InlineBytes(bytes)), size));
            }
            // It grew since it was listed: store what was read and the rest.
            return self.store_content(rel, std::io::Cursor::new(bytes).chain(reader), listed);
        }
        self.store_content(rel, reader, listed)
    }

    /// Stores a file's content in data blobs: a registry blob in gzip is kept as gzip
    /// content when the backup asks for it. A registry blob is checked against its digest
    /// as it is read and recorded in the digest map.
    fn store_content(
        &self,
        rel: &Path,
        reader: impl Read + Send,
        listed: u64,
    ) -> Result<(Content, u64)> {
        let digest = registry::blob_digest(rel);
        let mut reader = Hashed {
            inner: reader,
            sha: digest.map(|_| Sha256::new()),
            count: 0,
        };
        let content = if digest.is_some() && self.gzip && listed >= GZIP_MIN {
            let content = self.gzip_content(rel, &mut reader, listed)?;
            self.progress.advance(reader.count);
            content
        } else {
            Content::Chunks(self.chunk(rel, &mut reader, listed, true)?)
        };
        let size = reader.count;
        if let (Some(expected), Some(sha)) = (digest, reader.sha) {
            let actual: [u8; 32] = sha.finalize().into();
            if actual == expected {
                let record = DigestRecord {
                    size,
                    content: content.clone(),
                };
                self.repo.index().set_digest(&expected, &record)?;
            } else {
                self.progress.warn(&format!(
                    "{}: registry blob does not match its digest (stored as found)",
                    display(rel)
                ));
            }
        }
        Ok((content, size))
    }

    /// A gzip file as gzip content (its plaintext, the recipe that re-creates it, and the
    /// bytes after what the recipe re-creates), or as plain chunks when it is not gzip or
    /// no part of it can be re-created exactly (counted as a fallback).
    fn gzip_content(
        &self,
        rel: &Path,
        mut reader: impl Read + Send,
        listed: u64,
    ) -> Result<Content> {
        let io_err = |e| Error::io(display(rel), e);
        let mut head = Vec::new();
        (&mut reader)
            .take(gzip::HEADER_MAX as u64)
            .read_to_end(&mut head)
            .map_err(io_err)?;
        let Some(header) = gzip::header_len(&head) else {
            let ids = self.chunk(rel, std::io::Cursor::new(head).chain(reader), listed, false)?;
            return Ok(Content::Chunks(ids));
        };
        let mut body = std::io::Cursor::new(head.split_off(header)).chain(reader);
        let (plain, pieces, ending, unchecked) =
            gzip::split(&mut body, |checked| self.chunk(rel, checked, listed, false))
                .map_err(io_err)?;
        let plain = plain?;
        let rest = std::io::Cursor::new(unchecked).chain(body);
        if pieces.is_empty() {
            add(&self.counts.gzip_fallbacks, 1);
            let ids = self.chunk(rel, std::io::Cursor::new(head).chain(rest), listed, false)?;
            return Ok(Content::Chunks(ids));
        }
        let recreated: u64 = pieces.iter().map(|p| p.compressed).sum::<u64>() + head.len() as u64;
        match ending {
            gzip::Ending::Complete => add(&self.counts.gzip_layers, 1),
            gzip::Ending::Failed(why) => {
                add(&self.counts.gzip_partial, 1);
                self.progress.warn(&format!(
                    "{}: gzip content for the first {recreated} bytes; the rest is stored as it is ({why})",
                    display(rel)
                ));
            }
        }
        let tail = self.chunk(rel, rest, 0, false)?;
        let recipe = gzip::Recipe {
            header: head,
            pieces,
        }
        .encode();
        let size = recipe.len() as u64;
        let recipe = self.chunk(rel, std::io::Cursor::new(recipe), size, false)?;
        Ok(Content::Gzip(GzipContent {
            recipe,
            plain,
            tail,
        }))
    }

    /// Chunks `reader` into data blobs; `progress` reports the bytes as they go.
    fn chunk(
        &self,
        rel: &Path,
        reader: impl Read,
        size_hint: u64,
        progress: bool,
    ) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let chunked =
            self.repo
                .chunker()
                .chunk_with(&mut buffer, reader, size_hint, |chunk| -> Result<()> {
                    let (id, pack) = self.packer.add(BlobKind::Data, chunk)?;
                    self.packer.submit_blocking(pack)?;
                    ids.push(id);
                    if progress {
                        self.progress.advance(chunk.len() as u64);
                    }
                    Ok(())
                });
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buffer);
        chunked.map_err(|e| match e {
            Error::Io { cause, .. } => Error::io(display(rel), cause),
            e => e,
        })?;
        Ok(ids)
    }
}

/// Gzip registry blobs smaller than this are stored as they are.
const GZIP_MIN: u64 = 64 << 10;

/// A reader that hashes (when asked) and counts what passes through.
struct Hashed<R> {
    inner: R,
    sha: Option<Sha256>,
    count: u64,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(sha) = self.sha.as_mut() {
            sha.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Below this depth a listing task leaves subdirectories to the walk (bounded recursion).
const LISTING_DEPTH: usize = 32;

/// A directory's entries and, for each of its subdirectories in order, its listing when it
/// was read in the same task.
pub struct Listing {
    entries: Vec<EntryMeta>,
    subdirs: Vec<Option<Result<Listing>>>,
}

/// Lists `rel` and then, depth first, its subdirectories while `budget` lasts.
fn list_tree(source: &dyn Source, rel: &Path, budget: &mut usize, depth: usize) -> Result<Listing> {
    let entries = source
        .read_dir(rel)
        .map_err(|e| Error::io(display(rel), e))?;
    *budget = budget.saturating_sub(entries.len().max(1));
    let subdirs = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| {
            (*budget > 0 && depth < LISTING_DEPTH).then(|| {
                let at = rel.join(std::ffi::OsStr::from_bytes(&e.name));
                list_tree(source, &at, budget, depth + 1)
            })
        })
        .collect();
    Ok(Listing { entries, subdirs })
}

/// Whether a timestamp (seconds, nanoseconds) is too close to `since` to prove anything. A
/// timestamp of whole seconds (nanoseconds 0: a filesystem that keeps seconds, S3) stands for
/// its whole second.
fn racy(secs: i64, nanos: u32, since: (i64, u32)) -> bool {
    match nanos {
        0 => secs >= since.0,
        _ => (secs, nanos) >= since,
    }
}

#[cfg(test)]
mod tests {
    use super::racy;

    #[test]
    fn racy_timestamps_to_the_nanosecond_or_by_their_whole_second() {
        let since = (100, 950_000_000);
        assert!(racy(100, 960_000_000, since));
        assert!(racy(101, 1, since));
        assert!(!racy(100, 940_000_000, since));
        // Whole seconds (a filesystem that keeps only seconds): 100 may be 100.99.
        assert!(racy(100, 0, since));
        assert!(!racy(99, 0, since));
    }
}
