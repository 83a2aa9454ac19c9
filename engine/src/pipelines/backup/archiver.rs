//! Walks a source and turns it into trees: one walk depth first, listings ahead of it,
//! file contents on blocking threads, unchanged files taken from the parent snapshot or the
//! registry digest map.
//!
//! The steps, one file each under `archiver/`: `tree` (the walk, and a directory's tree
//! when its entries are done), `listing` (a directory's entries prepared, and listing ahead
//! of the walk), `parent` (parent match and change detection), `file` (a file's content, chunked and packed) and `gzip_content` (a registry
//! blob in gzip as gzip content). They share the [`Archiver`] here and its counts.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stowage_backends::source::Source;
use tokio::sync::Semaphore;

use super::BackupOptions;
use crate::progress::Progress;
use crate::repo::packer::Packer;
use crate::repo::Repository;

mod file;
mod gzip_content;
mod listing;
mod parent;
mod tree;

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
    /// Files and directories left out because they could not be read.
    pub unreadable: AtomicU64,
    /// Entries left out by `--exclude`.
    pub excluded: AtomicU64,
    /// Registry blobs that did not match their digest, and the first of their paths.
    pub digest_mismatches: AtomicU64,
    pub mismatched: std::sync::Mutex<Vec<String>>,
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
    dir_slots: Semaphore,
    /// Directories being finished at once: their entries awaited, their trees stored.
    finish_slots: Arc<Semaphore>,
    /// Whether gzip registry blobs are kept as gzip content.
    gzip: bool,
    /// Chunker buffers, one per reader, reused from file to file.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    /// `--exclude` patterns.
    excludes: Vec<crate::pattern::Pattern>,
}

fn display(rel: &Path) -> String {
    rel.display().to_string()
}

impl Archiver {
    /// Decides about the entry at `rel` that the source could not open or list: left out
    /// with a warning when it vanished since its directory was listed (as if the backup
    /// had started later) or cannot be read (permissions: counted, the snapshot is
    /// partial); any other failure, or an unreadable one with `fail_on_unreadable`, is the
    /// backup's error.
    pub(super) fn skip(&self, rel: &Path, cause: std::io::Error) -> crate::Result<()> {
        use std::io::ErrorKind;
        match cause.kind() {
            ErrorKind::NotFound => {
                self.progress.warn(&format!(
                    "{}: vanished during the backup, skipped",
                    display(rel)
                ));
                Ok(())
            }
            ErrorKind::PermissionDenied if !self.opts.fail_on_unreadable => {
                add(&self.counts.unreadable, 1);
                self.progress.warn(&format!(
                    "{}: cannot be read ({cause}), left out of the snapshot",
                    display(rel)
                ));
                Ok(())
            }
            _ => Err(crate::Error::io(display(rel), cause)),
        }
    }

    pub fn new(
        repo: Arc<Repository>,
        source: Arc<dyn Source>,
        packer: Arc<Packer>,
        progress: Arc<dyn Progress>,
        opts: BackupOptions,
        racy_since: Option<(i64, u32)>,
    ) -> Arc<Self> {
        let readers = opts.readers.max(1);
        let opts_excludes = opts
            .exclude
            .iter()
            .map(|p| crate::pattern::Pattern::new(p))
            .collect();
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
            dir_slots: Semaphore::new(LISTERS),
            finish_slots: Arc::new(Semaphore::new(FINISHING)),
            buffers: std::sync::Mutex::new(Vec::new()),
            excludes: opts_excludes,
        })
    }

    /// Whether the entry at `rel` is left out by an `--exclude` pattern (counted).
    pub(super) fn excluded(&self, rel: &Path, is_dir: bool) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let path = rel.to_string_lossy();
        let excluded = self.excludes.iter().any(|p| p.matches(&path, is_dir));
        if excluded {
            add(&self.counts.excluded, 1);
        }
        excluded
    }
}

/// Directory listings under way at once.
const LISTERS: usize = 8;

/// Directories being finished at once, beside the walk: each waits for its files' reads.
const FINISHING: usize = 64;

/// Gzip registry blobs smaller than this are stored as they are.
const GZIP_MIN: u64 = 64 << 10;
