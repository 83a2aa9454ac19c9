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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::extsort::{sort_memory, Sorted, Sorter};
use crate::format::id::Id;
use crate::format::index_file::{encode_index_file, INDEX_FILE_ENTRIES};
use crate::format::marks::{Mark, Marks};
use crate::format::pack::{Pack, PackEntry, ENTRY_LEN};
use crate::progress::Progress;
use crate::repo::index::{self, placed, unplaced, Location, PLACED};
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

/// Everything the repository holds, read after the snapshots are. What would grow with the
/// number of blobs is sorted on disk (see `extsort`); what is kept in memory grows with the
/// number of packs and index files.
struct Inventory {
    marks: Marks,
    /// Index files and the packs each names.
    index_files: Vec<(Id, Vec<Id>)>,
    /// Every indexed pack's blobs (from the first index file naming it), by blob id, copies
    /// in unmarked packs first (see [`copy_record`]).
    copies: Sorted<COPY>,
    /// Indexed packs, in id order.
    indexed: BTreeSet<Id>,
    /// Packs in the store, with their sizes. Listed after the index files, so a pack an
    /// index file names is either here or gone.
    stored: HashMap<Id, u64>,
}

impl Inventory {
    async fn read(repo: &Repository) -> Result<Self> {
        let store = repo.store().as_ref();
        let marks = crate::repo::marks::load(store, repo.keys()).await?;
        // Two at a time: each holds up to 50,000 entries decoded (a few MiB).
        let mut files = futures::stream::iter(index::list_index_files(store).await?)
            .map(|id| async move {
                Ok::<_, Error>((id, index::read_index_file(store, repo.keys(), id).await?))
            })
            .buffered(2);
        let mut index_files = Vec::new();
        let mut indexed = BTreeSet::new();
        let mut copies = Sorter::new(sort_memory());
        while let Some(file) = files.next().await {
            let (id, packs) = file?;
            for (pack, entries) in &packs {
                if indexed.insert(*pack) {
                    for entry in entries {
                        copies.push(copy_record(entry, pack, marks.is_marked(pack)))?;
                    }
                }
            }
            index_files.push((id, packs.into_iter().map(|(pack, _)| pack).collect()));
        }
        let stored = Pack::list_stored(store).await?;
        Ok(Inventory {
            marks,
            index_files,
            copies: copies.sorted()?,
            indexed,
            stored,
        })
    }
}

/// A blob's copy in a pack: blob id, 0 for an unmarked pack or 1 for a marked one, pack id,
/// entry. Sorted, a blob's copies come together, unmarked packs first, then by pack id.
const COPY: usize = 32 + 1 + 32 + ENTRY_LEN;

fn copy_record(entry: &PackEntry, pack: &Id, marked: bool) -> [u8; COPY] {
    let mut r = [0; COPY];
    r[..32].copy_from_slice(&entry.id.0);
    r[32] = u8::from(marked);
    r[33..65].copy_from_slice(&pack.0);
    let mut encoded = Vec::with_capacity(ENTRY_LEN);
    entry.encode(&mut encoded);
    r[65..].copy_from_slice(&encoded);
    r
}

fn copy_from_record(r: &[u8; COPY]) -> Result<(Id, PackEntry)> {
    let entry = PackEntry::decode(&r[65..])
        .ok_or_else(|| Error::Bug("a sorted pack entry does not decode".into()))?;
    Ok((Id(r[33..65].try_into().expect("32 bytes")), entry))
}

/// How much of an indexed, stored pack the snapshots need.
#[derive(Default)]
struct PackUse {
    /// Blobs whose kept copy is this pack's.
    used: u64,
    used_bytes: u64,
    unused_bytes: u64,
}

/// What to do, decided before anything is written.
#[derive(Default)]
struct Plan {
    /// Packs whose needed blobs move to new packs.
    repack: BTreeSet<Id>,
    /// Marks carried over: pending ones, and those of deleted packs (tombstones).
    marks: Vec<Mark>,
    /// Packs to mark now (repacked packs are marked once their blobs have moved).
    mark: Vec<Id>,
    delete: Vec<Id>,
    /// Packs to take out of the index files: those deleted and those already gone.
    unindex: HashSet<Id>,
    report: PruneReport,
}

/// Each needed blob's home (the stored pack whose copy is kept, unmarked packs first), merging
/// the sorted needed ids with the sorted copies: how much of each pack is used, and the kept
/// copies sorted by pack and offset. A blob is kept once: a second entry of it in the same
/// pack counts as unused. Fails when a needed blob is in no stored pack.
fn homes(
    inventory: &mut Inventory,
    needed: Sorted<32>,
) -> Result<(HashMap<Id, PackUse>, Sorted<PLACED>)> {
    let mut uses: HashMap<Id, PackUse> = HashMap::new();
    let mut kept = Sorter::new(sort_memory());
    let mut needed = needed.peekable();
    let mut last_home: Option<[u8; 32]> = None;
    let (mut lost, mut first_lost) = (0u64, None);
    let mut lose = |id: [u8; 32], last_home: &Option<[u8; 32]>| {
        if last_home.as_ref() != Some(&id) {
            lost += 1;
            first_lost.get_or_insert(Id(id));
        }
    };
    for record in &mut inventory.copies {
        let record = record?;
        let (pack, entry) = copy_from_record(&record)?;
        if !inventory.stored.contains_key(&pack) {
            continue;
        }
        let id = entry.id.0;
        while let Some(next) = needed.next_if(|n| n.as_ref().map_or(true, |n| *n < id)) {
            lose(next?, &last_home);
        }
        let is_needed = matches!(needed.peek(), Some(Ok(n)) if *n == id);
        let usage = uses.entry(pack).or_default();
        if is_needed && last_home != Some(id) {
            last_home = Some(id);
            usage.used += 1;
            usage.used_bytes += u64::from(entry.length);
            // By pack and offset: repacked blobs keep their order, and trees their locality.
            kept.push(placed(&Location { pack, entry }, 0))?;
        } else {
            usage.unused_bytes += u64::from(entry.length);
        }
    }
    for next in needed {
        lose(next?, &last_home);
    }
    if let Some(lost_id) = first_lost {
        return Err(Error::corrupt(
            "repository",
            format!(
                "prune stopped before changing anything: snapshots need {lost} blob(s) that are \
             in no stored pack (e.g. blob {lost_id}); `stowage check` names the files, and says \
             which repair to run (a backup of the same sources, then `stowage repair \
             snapshots`)"
            ),
        ));
    }
    Ok((uses, kept.sorted()?))
}

fn plan(
    inventory: &Inventory,
    uses: &HashMap<Id, PackUse>,
    opts: &PruneOptions,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::default();
    let report = &mut plan.report;
    let indexed = &inventory.indexed;
    let marked = |pack: &Id| inventory.marks.by_pack.get(pack);
    report.packs = inventory.stored.len();
    report.stored_bytes = inventory.stored.values().sum();

    let unused = PackUse::default();
    for pack in indexed {
        let Some(&size) = inventory.stored.get(pack) else {
            report.packs_missing += 1;
            plan.unindex.insert(*pack);
            plan.marks
                .extend(marked(pack).filter(|m| m.tombstone_kept(now)).copied());
            continue;
        };
        let usage = uses.get(pack).unwrap_or(&unused);
        let (used_bytes, unused_bytes) = (usage.used_bytes, usage.unused_bytes);
        report.needed_bytes += used_bytes;
        match marked(pack) {
            Some(_) if usage.used > 0 => report.packs_unmarked += 1,
            Some(mark) if mark.expired(now) => {
                plan.delete.push(*pack);
                plan.unindex.insert(*pack);
                plan.marks
                    .extend(Some(*mark).filter(|m| m.tombstone_kept(now)));
                report.bytes_deleted += size;
            }
            Some(mark) => plan.marks.push(*mark),
            None if usage.used == 0 => plan.mark.push(*pack),
            None if unused_bytes > 0
                && unused_bytes as f64
                    >= opts.repack_unused * (used_bytes + unused_bytes) as f64 =>
            {
                plan.repack.insert(*pack);
                report.bytes_repacked += used_bytes;
                report.blobs_repacked += usage.used;
            }
            None => report.unused_bytes_kept += unused_bytes,
        }
    }

    // Packs no index file names: left by a killed run, or still being written by a running
    // one. Marked first, so a run still under way has the grace period to index them.
    for (pack, &size) in &inventory.stored {
        if indexed.contains(pack) {
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
                && !indexed.contains(&m.pack)
                && m.tombstone_kept(now)
        }));

    report.packs_deleted = plan.delete.len();
    report.packs_repacked = plan.repack.len();
    report.packs_marked = plan.mark.len() + plan.repack.len();
    // Stored packs marked once this prune is done.
    let deleted: HashSet<&Id> = plan.delete.iter().collect();
    let newly = plan.mark.iter().chain(&plan.repack);
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
    plan
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
    let mut inventory = Inventory::read(&repo).await?;
    let (uses, kept) = homes(&mut inventory, needed)?;
    let mut plan = plan(&inventory, &uses, opts, now);
    plan.report.snapshots = snapshots.len();
    plan.report.dry_run = opts.dry_run;
    if opts.dry_run {
        return Ok(plan.report);
    }

    progress.phase("prune: repack", Some(plan.report.bytes_repacked));
    plan.report.packs_new = repack(&repo, &plan.repack, kept, opts.pack_size, &progress).await?;
    // Dated when written: the grace period starts when backups can see the mark.
    let marked_at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
    let newly = plan.mark.iter().chain(&plan.repack);
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

/// Moves the kept blobs of each pack in `packs` into new packs (verified on the way, stored
/// sealed as they are); `kept` is every kept copy, by pack. Returns how many packs were
/// written. They are indexed when this returns.
async fn repack(
    repo: &Arc<Repository>,
    packs: &BTreeSet<Id>,
    kept: Sorted<PLACED>,
    pack_size: usize,
    progress: &Arc<dyn Progress>,
) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    let packer = Packer::start_repacking(Arc::clone(repo), pack_size);
    // One pack's kept entries at a time, in pack order.
    let mut kept = kept.peekable();
    for &pack in packs {
        let mut entries = Vec::new();
        while let Some(record) =
            kept.next_if(|r| r.as_ref().map_or(true, |r| r[..32] <= pack.0[..]))
        {
            let (loc, _) = unplaced(&record?)?;
            if loc.pack == pack {
                entries.push(loc.entry);
            }
        }
        let moved: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        let bytes = repo.store().get(&Pack::key(&pack)).await?;
        let (repo2, packer2) = (Arc::clone(repo), Arc::clone(&packer));
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
/// returns how many were replaced. The affected files are read again one at a time; the new
/// files are written before the old are deleted.
async fn rewrite_index_files(
    repo: &Repository,
    files: &[(Id, Vec<Id>)],
    unindex: &HashSet<Id>,
) -> Result<usize> {
    let affected: Vec<Id> = files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|p| unindex.contains(p)))
        .map(|(file, _)| *file)
        .collect();
    let mut batch: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut blobs = 0;
    for file in &affected {
        let packs = index::read_index_file(repo.store().as_ref(), repo.keys(), *file).await?;
        for (pack, entries) in packs.into_iter().filter(|(p, _)| !unindex.contains(p)) {
            if blobs + entries.len() > INDEX_FILE_ENTRIES && !batch.is_empty() {
                repo.save_sealed("index", &encode_index_file(&batch))
                    .await?;
                batch.clear();
                blobs = 0;
            }
            blobs += entries.len();
            batch.push((pack, entries));
        }
    }
    if !batch.is_empty() {
        repo.save_sealed("index", &encode_index_file(&batch))
            .await?;
    }
    for file in &affected {
        repo.store().delete(&format!("index/{file}")).await?;
    }
    Ok(affected.len())
}
