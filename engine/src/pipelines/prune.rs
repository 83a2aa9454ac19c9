//! The prune pipeline (FORMAT.md, "Prune"): what the snapshots need -> inventory -> a plan ->
//! repack -> marks -> index files -> deletions.
//!
//! Prune is two-phase and takes no lock. A pack no snapshot needs is only marked; a later
//! prune deletes it once its grace period has passed, if it is still unneeded then. Packs
//! that are partly needed are repacked: the needed blobs move to new packs and the old pack
//! is marked like any other. Backups running meanwhile stay safe because they never come to
//! rely on a marked pack, and refuse to write a snapshot relying on a pack marked during the
//! run when its deletion is near (see [`crate::format::marks`]).
//!
//! The steps run in an order that keeps every snapshot restorable whenever the prune stops:
//! new packs and their index files first, then the marks, then index files without the
//! packs to delete, then the packs, then the mark files that were replaced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::index_file::{encode_index_file, PackList, INDEX_FILE_ENTRIES};
use crate::format::marks::{Mark, Marks};
use crate::format::pack::{Pack, PackEntry};
use crate::progress::Progress;
use crate::repo::index::{self, Location};
use crate::repo::packer::Packer;
use crate::repo::{Repository, SnapshotList};
use crate::runtime;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long a marked pack is kept before a later prune may delete it. Longer than the
    /// longest backup, plus [`SAFETY_MARGIN`](crate::format::marks::SAFETY_MARGIN).
    pub grace: Duration,
    /// Packs with at least this fraction of their bytes unneeded are repacked.
    pub repack_unused: f64,
    pub dry_run: bool,
    pub pack_size: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::hours(24),
            repack_unused: 0.3,
            dry_run: false,
            pack_size: 16 << 20,
        }
    }
}

/// What a prune found and did (or, dry, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    /// Packs in the store.
    pub packs: usize,
    pub stored_bytes: u64,
    /// Sealed bytes of the blobs the snapshots need.
    pub needed_bytes: u64,
    /// Packs marked by this prune (unneeded, repacked, or in no index).
    pub packs_marked: usize,
    /// Marked packs a snapshot turned out to need: no longer marked.
    pub packs_unmarked: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    pub packs_repacked: usize,
    pub blobs_repacked: u64,
    /// Sealed bytes moved to new packs.
    pub bytes_repacked: u64,
    pub packs_new: u64,
    /// Packs marked once this prune is done (waiting for their grace period), and bytes.
    pub packs_pending: usize,
    pub bytes_pending: u64,
    /// When the earliest pending pack may be deleted.
    pub next_deletion: Option<DateTime<Utc>>,
    /// Packs in the store that no index file names (an interrupted run's, or a running one's).
    pub packs_unindexed: usize,
    /// Packs index files named that the store no longer has; dropped from the index.
    pub packs_missing: usize,
    pub index_files_rewritten: usize,
    /// Unneeded bytes left in packs below the repack threshold.
    pub unused_bytes_kept: u64,
}

/// Everything the repository holds, read after the snapshots are.
struct Inventory {
    marks: Marks,
    /// Index files and what they name.
    index_files: Vec<(Id, PackList)>,
    /// Packs in the store, with their sizes. Listed after the index files, so a pack an
    /// index file names is either here or gone.
    stored: HashMap<Id, u64>,
}

impl Inventory {
    async fn read(repo: &Repository) -> Result<Self> {
        let store = repo.store().as_ref();
        let marks = crate::repo::marks::load(store, repo.keys()).await?;
        let index_files = futures::stream::iter(index::list_index_files(store).await?)
            .map(|id| async move {
                Ok::<_, Error>((id, index::read_index_file(store, repo.keys(), id).await?))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let stored = Pack::list_stored(store).await?;
        Ok(Inventory {
            marks,
            index_files,
            stored,
        })
    }

    /// Each indexed pack's entries (from the first index file naming it), in pack id order.
    fn indexed(&self) -> BTreeMap<Id, &[PackEntry]> {
        let mut packs = BTreeMap::new();
        for (pack, entries) in self.index_files.iter().flat_map(|(_, packs)| packs) {
            packs.entry(*pack).or_insert(entries.as_slice());
        }
        packs
    }
}

/// What to do, decided before anything is written.
#[derive(Default)]
struct Plan {
    /// Packs whose needed blobs move to new packs, with those blobs.
    repack: Vec<(Id, Vec<PackEntry>)>,
    /// Marks carried over: pending ones, and those of deleted packs (tombstones).
    marks: Vec<Mark>,
    /// Packs to mark now (repacked packs are marked once their blobs have moved).
    mark: Vec<Id>,
    delete: Vec<Id>,
    /// Packs to take out of the index files: those deleted and those already gone.
    unindex: HashSet<Id>,
    report: PruneReport,
}

/// Each needed blob's home: the stored pack whose copy is kept, unmarked packs first. Fails
/// when a needed blob is in no stored pack.
fn homes(
    inventory: &Inventory,
    indexed: &BTreeMap<Id, &[PackEntry]>,
    needed: &HashSet<Id>,
) -> Result<HashMap<Id, Id>> {
    let mut home: HashMap<Id, Id> = HashMap::new();
    let candidates = indexed
        .iter()
        .filter(|(pack, _)| inventory.stored.contains_key(pack));
    let (live, doomed): (Vec<_>, Vec<_>) =
        candidates.partition(|(pack, _)| !inventory.marks.is_marked(pack));
    for (pack, entries) in live.into_iter().chain(doomed) {
        for e in entries.iter().filter(|e| needed.contains(&e.id)) {
            home.entry(e.id).or_insert(*pack);
        }
    }
    if let Some(lost) = needed.iter().find(|id| !home.contains_key(id)) {
        let count = needed.iter().filter(|id| !home.contains_key(id)).count();
        return Err(Error::corrupt(
            "repository",
            format!(
                "prune stopped before changing anything: snapshots need {count} blob(s) that are \
             in no stored pack (e.g. blob {lost}); `stowage check` names the files, and says \
             which repair to run (a backup of the same sources, then `stowage repair \
             snapshots`)"
            ),
        ));
    }
    Ok(home)
}

fn plan(
    inventory: &Inventory,
    needed: &HashSet<Id>,
    opts: &PruneOptions,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let mut plan = Plan::default();
    let report = &mut plan.report;
    let indexed = inventory.indexed();
    let marked = |pack: &Id| inventory.marks.by_pack.get(pack);
    report.packs = inventory.stored.len();
    report.stored_bytes = inventory.stored.values().sum();

    let home = homes(inventory, &indexed, needed)?;
    for (pack, entries) in &indexed {
        let Some(&size) = inventory.stored.get(pack) else {
            report.packs_missing += 1;
            plan.unindex.insert(*pack);
            plan.marks
                .extend(marked(pack).filter(|m| m.tombstone_kept(now)).copied());
            continue;
        };
        let (used, unused): (Vec<&PackEntry>, Vec<&PackEntry>) =
            entries.iter().partition(|e| home.get(&e.id) == Some(pack));
        let bytes = |es: &[&PackEntry]| es.iter().map(|e| u64::from(e.length)).sum::<u64>();
        let (used_bytes, unused_bytes) = (bytes(&used), bytes(&unused));
        report.needed_bytes += used_bytes;
        match marked(pack) {
            Some(_) if !used.is_empty() => report.packs_unmarked += 1,
            Some(mark) if mark.expired(now) => {
                plan.delete.push(*pack);
                plan.unindex.insert(*pack);
                plan.marks
                    .extend(Some(*mark).filter(|m| m.tombstone_kept(now)));
                report.bytes_deleted += size;
            }
            Some(mark) => plan.marks.push(*mark),
            None if used.is_empty() => plan.mark.push(*pack),
            None if unused_bytes > 0
                && unused_bytes as f64
                    >= opts.repack_unused * (used_bytes + unused_bytes) as f64 =>
            {
                plan.repack
                    .push((*pack, used.into_iter().copied().collect()));
                report.bytes_repacked += used_bytes;
            }
            None => report.unused_bytes_kept += unused_bytes,
        }
    }

    // Packs no index file names: left by a killed run, or still being written by a running
    // one. Marked first, so a run still under way has the grace period to index them.
    for (pack, &size) in &inventory.stored {
        if indexed.contains_key(pack) {
            continue;
        }
        report.packs_unindexed += 1;
        match marked(pack) {
            Some(mark) if mark.expired(now) => {
                plan.delete.push(*pack);
                plan.marks
                    .extend(Some(*mark).filter(|m| m.tombstone_kept(now)));
                report.bytes_deleted += size;
            }
            Some(mark) => plan.marks.push(*mark),
            None => plan.mark.push(*pack),
        }
    }
    // Marks of packs already deleted stay a while as tombstones (see `Mark::tombstone_kept`).
    plan.marks
        .extend(inventory.marks.by_pack.values().filter(|m| {
            !inventory.stored.contains_key(&m.pack)
                && !indexed.contains_key(&m.pack)
                && m.tombstone_kept(now)
        }));

    report.packs_deleted = plan.delete.len();
    report.packs_repacked = plan.repack.len();
    report.packs_marked = plan.mark.len() + plan.repack.len();
    report.blobs_repacked = plan.repack.iter().map(|(_, e)| e.len() as u64).sum();
    // Stored packs marked once this prune is done.
    let deleted: HashSet<&Id> = plan.delete.iter().collect();
    let newly = plan.mark.iter().chain(plan.repack.iter().map(|(p, _)| p));
    let pending: Vec<Mark> = plan
        .marks
        .iter()
        .filter(|m| inventory.stored.contains_key(&m.pack) && !deleted.contains(&m.pack))
        .copied()
        .chain(newly.map(|p| Mark::new(*p, now, opts.grace)))
        .collect();
    report.packs_pending = pending.len();
    report.bytes_pending = pending
        .iter()
        .filter_map(|m| inventory.stored.get(&m.pack))
        .sum();
    report.next_deletion = pending.iter().map(Mark::delete_after).min();
    Ok(plan)
}

/// Removes what no snapshot needs, as far as the grace period allows. `now` decides which
/// marks have expired and dates new ones.
pub async fn prune(
    repo: Arc<Repository>,
    opts: &PruneOptions,
    now: DateTime<Utc>,
    progress: Arc<dyn Progress>,
) -> Result<PruneReport> {
    if repo.store().retains() && !opts.dry_run {
        return Err(Error::Usage(format!(
            "{} keeps every object under Object Lock retention: prune cannot delete them \
             before it ends (and every backup extends it for what it uses); nothing was changed",
            repo.store().describe()
        )));
    }
    let started = Instant::now();
    progress.phase("prune: snapshots", None);
    // Snapshots first: the index files and packs each one needs were written before it, so
    // the inventory read next has them all. A snapshot written later is not seen; its
    // backup checked the marks before writing it (see `crate::format::marks`).
    let SnapshotList { snapshots, damaged } = repo.snapshot_list().await?;
    // What a damaged snapshot needs cannot be known: pruning now could delete the only copy
    // of data it could still be restored from once its object is put back.
    if let Some(first) = damaged.first() {
        return Err(Error::corrupt(
            format!("snapshots/{}", first.id),
            format!(
                "{} damaged snapshot(s), e.g. {}: {}. Prune changed nothing: it cannot know \
                 what they need. Forget them (`stowage forget {}`) or put the objects back \
                 from a copy, then prune",
                damaged.len(),
                first.id.short(),
                first.reason,
                damaged
                    .iter()
                    .map(|d| d.id.short())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    repo.index()
        .sync(repo.store().as_ref(), repo.keys())
        .await?;
    // The packs only a damaged index file names look unindexed: prune would delete them.
    if let Some((first, why)) = repo.index().damaged().first() {
        return Err(Error::corrupt(
            format!("index/{first}"),
            format!(
                "{why}. Prune changed nothing: the packs this index file names would look \
                 unused and be deleted. Put the object back from a copy of the repository, \
                 then prune again"
            ),
        ));
    }
    let needed = crate::repo::reach::reachable(&repo, snapshots.iter().map(|(_, s)| s))
        .await
        .map_err(|e| {
            Error::corrupt(
                "repository",
                format!(
                    "prune stopped before changing anything: the snapshots' trees cannot all be \
                     read ({e}); `stowage check` names the damage and the repair to run"
                ),
            )
        })?;
    progress.phase("prune: inventory", None);
    let inventory = Inventory::read(&repo).await?;
    let mut plan = plan(&inventory, &needed, opts, now)?;
    plan.report.snapshots = snapshots.len();
    plan.report.dry_run = opts.dry_run;
    if opts.dry_run {
        return Ok(plan.report);
    }

    progress.phase("prune: repack", Some(plan.report.bytes_repacked));
    plan.report.packs_new = repack(&repo, &plan.repack, opts.pack_size, &progress).await?;
    // Dated when written: the grace period starts when backups can see the mark.
    let marked_at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
    let newly = plan.mark.iter().chain(plan.repack.iter().map(|(p, _)| p));
    let new_marks: Vec<Mark> = newly
        .map(|pack| Mark::new(*pack, marked_at, opts.grace))
        .collect();
    plan.marks.extend(new_marks);

    progress.phase("prune: delete", Some(plan.report.bytes_deleted));
    let store = repo.store().as_ref();
    crate::repo::marks::write(store, repo.keys(), plan.marks).await?;
    plan.report.index_files_rewritten =
        rewrite_index_files(&repo, &inventory.index_files, &plan.unindex).await?;
    let (stored, progress) = (&inventory.stored, progress.as_ref());
    futures::stream::iter(&plan.delete)
        .map(|pack| async move {
            store.delete(&Pack::key(pack)).await?;
            progress.advance(stored.get(pack).copied().unwrap_or(0));
            Ok::<_, Error>(())
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    for file in &inventory.marks.files {
        store.delete(&format!("marks/{file}")).await?;
    }
    repo.index().sync(store, repo.keys()).await?;
    Ok(plan.report)
}

/// Moves the listed blobs of each pack into new packs (verified on the way, stored sealed as
/// they are); returns how many packs were written. They are indexed when this returns.
async fn repack(
    repo: &Arc<Repository>,
    packs: &[(Id, Vec<PackEntry>)],
    pack_size: usize,
    progress: &Arc<dyn Progress>,
) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    let packer = Packer::start_repacking(Arc::clone(repo), pack_size);
    for (pack, entries) in packs {
        let moved: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        let bytes = repo.store().get(&Pack::key(pack)).await?;
        let (repo2, packer2, pack, entries) = (
            Arc::clone(repo),
            Arc::clone(&packer),
            *pack,
            entries.clone(),
        );
        let full = runtime::blocking("the repack worker", move || {
            let mut full = Vec::new();
            for entry in entries {
                let sealed = bytes
                    .get(entry.range().start as usize..entry.range().end as usize)
                    .ok_or_else(|| {
                        Error::corrupt(format!("pack {pack}"), "cut short (pack truncated)")
                    })?;
                let loc = Location { pack, entry };
                repo2.decode_blob(&entry.id, &loc, sealed)?;
                full.extend(packer2.add_sealed(
                    entry.kind,
                    entry.id,
                    entry.compression,
                    entry.raw_length as usize,
                    sealed,
                )?);
            }
            Ok::<_, Error>(full)
        })
        .await??;
        for full in full {
            packer.submit(Some(full)).await?;
        }
        progress.advance(moved);
    }
    Ok(packer.finish().await?.new_packs)
}

/// Replaces every index file naming a pack in `unindex` by index files without those packs;
/// returns how many were replaced. The new files are written before the old are deleted.
async fn rewrite_index_files(
    repo: &Repository,
    files: &[(Id, PackList)],
    unindex: &HashSet<Id>,
) -> Result<usize> {
    let affected: Vec<&(Id, PackList)> = files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|(p, _)| unindex.contains(p)))
        .collect();
    let kept: Vec<&(Id, Vec<PackEntry>)> = affected
        .iter()
        .flat_map(|(_, packs)| packs)
        .filter(|(p, _)| !unindex.contains(p))
        .collect();
    let mut batch: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut blobs = 0;
    for (pack, entries) in kept {
        if blobs + entries.len() > INDEX_FILE_ENTRIES && !batch.is_empty() {
            repo.save_sealed("index", &encode_index_file(&batch))
                .await?;
            batch.clear();
            blobs = 0;
        }
        blobs += entries.len();
        batch.push((*pack, entries.clone()));
    }
    if !batch.is_empty() {
        repo.save_sealed("index", &encode_index_file(&batch))
            .await?;
    }
    for (file, _) in &affected {
        repo.store().delete(&format!("index/{file}")).await?;
    }
    Ok(affected.len())
}
