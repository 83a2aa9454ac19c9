//! Listing the source: a directory and, depth first, as much below it as a task's budget
//! allows, in a few blocking tasks.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage_backends::source::{EntryKind, EntryMeta, Source};

use super::{display, Archiver};
use crate::error::{Error, Joined, Result};
use crate::runtime;

impl Archiver {
    /// Lists the directories `dirs` and, depth first, as much below them as a task's budget
    /// allows, in a few blocking tasks: one hand-off per directory would cost more than a
    /// cached listing takes, while several tasks keep high-latency mounts busy.
    pub(super) async fn list_dirs(&self, dirs: Vec<PathBuf>) -> Vec<Result<Listing>> {
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
                runtime::blocking("a listing worker", move || {
                    let mut budget = budget;
                    batch
                        .iter()
                        .map(|at| list_tree(source.as_ref(), at, &mut budget, 0))
                        .collect::<Vec<_>>()
                })
                .await
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

    /// The listings of the subdirectories among `entries`: those listed with their parent,
    /// and the others listed now.
    pub(super) async fn complete(
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
}

/// Below this depth a listing task leaves subdirectories to the walk (bounded recursion).
const LISTING_DEPTH: usize = 32;

/// A directory's entries and, for each of its subdirectories in order, its listing when it
/// was read in the same task.
pub struct Listing {
    pub(super) entries: Vec<EntryMeta>,
    pub(super) subdirs: Vec<Option<Result<Listing>>>,
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
