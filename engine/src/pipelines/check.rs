//! The check pipeline: index against packs -> every snapshot's trees and blobs -> with
//! `read_data`, every pack read, its id and every blob authenticated -> damage mapped back
//! to the snapshot paths it affects, and what to run about it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::extsort::{sort_memory, Sorted, Sorter};
use crate::format::id::Id;
use crate::format::pack::{verified_header, Pack};
use crate::format::tree::NodeKind;
use crate::progress::Progress;
use crate::repo::index::{list_index_files, read_index_file};
use crate::repo::walk::{each_tree, Walk};
use crate::repo::{DamagedSnapshot, Repository, SnapshotList};
use crate::runtime;

/// What is wrong with a pack some blobs are indexed in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackDamage {
    /// The store does not have it.
    Missing,
    /// Its size is not the one its index file gives: cut short, or grown.
    #[default]
    WrongSize,
    /// Read with `--read-data`: its bytes, header or a blob do not authenticate.
    Unreadable,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: Id,
    pub damage: PackDamage,
    pub reason: String,
    /// `<snapshot short id>:<path>` of every file or directory that needs this pack.
    pub affected: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    /// Problems that make some snapshot unrestorable.
    pub errors: Vec<String>,
    pub damaged_packs: Vec<DamagedPack>,
    /// Harmless findings (e.g. packs left by an interrupted backup).
    pub notes: Vec<String>,
    /// What to run about the errors, in order.
    pub repairs: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.damaged_packs.is_empty()
    }
}

/// Which packs `check` reads whole (restic's `--read-data-subset`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSubset {
    /// Part `n` of `t` (1-based): the packs whose id, as a number, is `n - 1` modulo `t`.
    /// Every pack is in exactly one part, so `1/7` to `7/7` over a week read everything.
    Part { n: u32, t: u32 },
    /// A random share of the packs (0 to 1).
    Share(f64),
    /// Random packs up to about this many bytes.
    Bytes(u64),
}

impl DataSubset {
    /// The packs of `packs` this subset takes.
    fn select(&self, packs: &HashMap<Id, u64>) -> HashMap<Id, u64> {
        use rand::seq::SliceRandom;
        let mut all: Vec<(Id, u64)> = packs.iter().map(|(id, size)| (*id, *size)).collect();
        match *self {
            DataSubset::Part { n, t } => all
                .into_iter()
                .filter(|(id, _)| {
                    let number = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
                    number % t.max(1) == n.saturating_sub(1)
                })
                .collect(),
            DataSubset::Share(share) => {
                all.shuffle(&mut rand::thread_rng());
                let take = (all.len() as f64 * share.clamp(0.0, 1.0)).ceil() as usize;
                all.into_iter().take(take).collect()
            }
            DataSubset::Bytes(budget) => {
                all.shuffle(&mut rand::thread_rng());
                let mut total = 0;
                all.into_iter()
                    .take_while(|(_, size)| {
                        let fits = total < budget;
                        total += size;
                        fits
                    })
                    .collect()
            }
        }
    }
}

pub async fn check(
    repo: Arc<Repository>,
    read_data: bool,
    progress: Arc<dyn Progress>,
) -> Result<CheckReport> {
    let subset = None;
    check_with(repo, read_data, subset, progress).await
}

/// [`check`], reading only a subset of the packs when `subset` is given (and `read_data`).
pub async fn check_with(
    repo: Arc<Repository>,
    read_data: bool,
    subset: Option<DataSubset>,
    progress: Arc<dyn Progress>,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let packs = Pack::list_stored(repo.store().as_ref()).await?;
    // Packs whose indexed blobs are lost or in doubt, and why; mapped to the snapshot paths
    // that need them at the end.
    let mut suspect: BTreeMap<Id, (PackDamage, String)> = BTreeMap::new();
    let mut index_damaged = false;
    // Some snapshot needs a blob or tree no index names.
    let mut unindexed_needed = false;
    report.packs = packs.len();

    // Every index file authenticates and decodes: read from the store, not the cache, which
    // would hide one damaged after it was cached.
    let index_files = list_index_files(repo.store().as_ref()).await?;
    let mut reads = futures::stream::iter(index_files)
        .map(|id| {
            let repo = &repo;
            async move {
                (
                    id,
                    read_index_file(repo.store().as_ref(), repo.keys(), id).await,
                )
            }
        })
        .buffer_unordered(8);
    while let Some((id, read)) = reads.next().await {
        match read {
            // A pack's size follows from its entries: a pack cut short (or grown) is found
            // without reading it.
            Ok(listed) => {
                for (pack, entries) in &listed {
                    let Some(&size) = packs.get(pack) else {
                        continue;
                    };
                    let expected = Pack::len_for(entries);
                    if size != expected {
                        let reason = format!(
                            "it is {size} bytes but index file {id} says {expected}: cut \
                             short or damaged"
                        );
                        suspect.insert(*pack, (PackDamage::WrongSize, reason));
                    }
                }
            }
            Err(Error::Store(e)) if e.is_not_found() => {}
            Err(e) if e.kind() == ErrorKind::Damaged => {
                index_damaged = true;
                report.errors.push(format!(
                    "index file {id} is damaged ({e}); the packs only it names look unindexed"
                ))
            }
            Err(e) => return Err(e),
        }
    }

    // The index may only name packs that exist.
    // Each pack's blobs are kept in memory only for the packs in doubt; those of the packs
    // read whole are sorted by pack (see `extsort`) and taken one pack at a time. The packs
    // holding a blob's location are enough otherwise.
    let named = repo.index().packs()?;
    let gone: HashSet<Id> = named
        .iter()
        .filter(|p| !packs.contains_key(p))
        .copied()
        .collect();
    let mut blobs_by_pack: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut located: HashSet<Id> = HashSet::new();
    let mut by_pack = Sorter::<64>::new(sort_memory());
    let mut sorting = Ok(());
    repo.index().for_each(&mut |blob, loc| {
        located.insert(loc.pack);
        if gone.contains(&loc.pack) || suspect.contains_key(&loc.pack) {
            blobs_by_pack.entry(loc.pack).or_default().push(blob);
        }
        if read_data && sorting.is_ok() {
            sorting = by_pack.push(pack_blob(&loc.pack, &blob));
        }
    })?;
    sorting?;
    for pack in &gone {
        match located.contains(pack) {
            true => {
                let reason = "it is missing from the repository".to_string();
                suspect.insert(*pack, (PackDamage::Missing, reason));
            }
            // Every blob of it has another copy: nothing is lost, prune drops it.
            false => report.notes.push(format!(
                "index names pack {pack}, which is missing; its blobs have other copies"
            )),
        }
    }
    let unindexed = packs.keys().filter(|p| !named.contains(p)).count();
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} pack(s) are in no index (left by an interrupted backup; reused or pruned later)"
        ));
    }

    // Every snapshot's trees load, and every blob they name is indexed.
    let SnapshotList { snapshots, damaged } = repo.snapshot_list().await?;
    report.snapshots = snapshots.len();
    report
        .errors
        .extend(damaged.iter().map(DamagedSnapshot::warning));
    progress.phase("check snapshots", None);
    for (id, snap) in &snapshots {
        let mismatches = snap.summary.digest_mismatches;
        if mismatches > 0 {
            report.notes.push(format!(
                "snapshot {}: {mismatches} registry blob(s) did not match their digest when \
                 backed up (the registry's own damage, stored as found; a restore brings them \
                 back as they were), e.g. {}",
                id.short(),
                snap.summary.mismatched.first().map_or("", String::as_str)
            ));
        }
        for blob in snap.extra_blobs() {
            if !repo.index().contains(blob)? {
                unindexed_needed = true;
                report.errors.push(format!(
                    "snapshot {}: its tar skeleton needs blob {blob}, which is in no index",
                    id.short()
                ));
            }
        }
    }
    // Every tree once, named by a snapshot that reaches it (see `each_tree` for which).
    let roots = snapshots.iter().zip(0u32..).map(|((_, s), i)| (s.tree, i));
    let trees = each_tree(&repo, roots, |snapshot, tree_id, tree| {
        let snapshot = snapshots[snapshot as usize].0.short();
        let tree = match tree {
            Ok(tree) => tree,
            Err(e) => {
                unindexed_needed |= matches!(e, Error::MissingBlob(_));
                let error = format!("snapshot {snapshot}: tree {tree_id}: {e}");
                report.errors.push(error);
                return Ok(());
            }
        };
        for node in &tree.nodes {
            for blob in node.blobs() {
                if !repo.index().contains(blob)? {
                    unindexed_needed = true;
                    report.errors.push(format!(
                        "snapshot {snapshot}: {} needs blob {blob}, which is in no index",
                        node.name.lossy()
                    ));
                }
            }
        }
        Ok(())
    })
    .await?;
    report.trees = trees as usize;

    if read_data {
        let to_read = match &subset {
            Some(subset) => subset.select(&packs),
            None => packs.clone(),
        };
        let total = to_read.values().sum();
        progress.phase("read data", Some(total));
        let indexed = by_pack.sorted()?;
        let damaged =
            read_all_packs(&repo, &to_read, indexed, progress.as_ref(), &mut report).await?;
        // The blobs of the packs found damaged, for naming the files they break.
        if !damaged.is_empty() {
            let known: HashSet<Id> = blobs_by_pack.keys().copied().collect();
            repo.index().for_each(&mut |blob, loc| {
                if damaged.contains_key(&loc.pack) && !known.contains(&loc.pack) {
                    blobs_by_pack.entry(loc.pack).or_default().push(blob);
                }
            })?;
        }
        for (pack, reason) in damaged {
            suspect
                .entry(pack)
                .or_insert((PackDamage::Unreadable, reason));
        }
    }
    if !suspect.is_empty() {
        map_damage(&repo, &snapshots, &blobs_by_pack, suspect, &mut report).await?;
    }
    report.repairs = repairs(&report, index_damaged, unindexed_needed);
    Ok(report)
}

/// What to run about what `report` found, in order.
fn repairs(report: &CheckReport, index_damaged: bool, unindexed_needed: bool) -> Vec<String> {
    let mut repairs = Vec::new();
    if index_damaged || unindexed_needed {
        repairs.push(
            "`stowage repair index` rebuilds the index from the packs' own headers (packs \
             only a damaged index file named are indexed again)"
                .to_string(),
        );
    }
    let damaged = &report.damaged_packs;
    if damaged.iter().any(|d| d.damage != PackDamage::Missing) {
        repairs.push(
            "`stowage repair index --read-data` moves the blobs that still authenticate out \
             of damaged packs and drops the others from the index"
                .to_string(),
        );
    }
    let lost = damaged.iter().any(|d| !d.affected.is_empty());
    if lost || unindexed_needed {
        repairs.push(
            "a backup of the same sources stores lost blobs that the sources still hold \
             again, which makes every snapshot needing them whole; then `stowage repair \
             snapshots` rewrites the snapshots that still need lost blobs without them \
             (`--forget` also removes the originals)"
                .to_string(),
        );
    }
    repairs
}

/// Reads every pack; returns the damaged ones with the reason.
async fn read_all_packs(
    repo: &Arc<Repository>,
    packs: &HashMap<Id, u64>,
    indexed: Sorted<64>,
    progress: &dyn Progress,
    report: &mut CheckReport,
) -> Result<BTreeMap<Id, String>> {
    // In pack id order, each pack's indexed blobs taken from the sorted (pack, blob) records.
    let mut order: Vec<(Id, u64)> = packs.iter().map(|(p, size)| (*p, *size)).collect();
    order.sort_unstable();
    let mut indexed = indexed.peekable();
    let results: Vec<(Id, usize, Option<String>)> = futures::stream::iter(order)
        .map(|(pack, size)| {
            let mut blobs = HashSet::new();
            while let Some(record) =
                indexed.next_if(|r| r.as_ref().map_or(true, |r| r[..32] <= pack.0[..]))
            {
                let (of, blob) = pack_blob_from(&record?);
                if of == pack {
                    blobs.insert(blob);
                }
            }
            let repo = Arc::clone(repo);
            Ok::<_, Error>(async move {
                let bytes = repo.store().get(&Pack::key(&pack)).await?;
                let verdict = runtime::blocking("a pack verifier", move || {
                    verify_pack(&repo, &pack, &bytes, &blobs)
                })
                .await?;
                progress.advance(size);
                Ok::<_, Error>(match verdict {
                    Ok(blobs) => (pack, blobs, None),
                    Err(reason) => (pack, 0, Some(reason)),
                })
            })
        })
        .try_buffer_unordered(4)
        .try_collect()
        .await?;
    let mut damaged = BTreeMap::new();
    for (pack, blobs, reason) in results {
        report.packs_read += 1;
        report.blobs_read += blobs;
        if let Some(reason) = reason {
            damaged.insert(pack, reason);
        }
    }
    Ok(damaged)
}

/// A blob of a pack, as a record that sorts by pack.
fn pack_blob(pack: &Id, blob: &Id) -> [u8; 64] {
    let mut r = [0; 64];
    r[..32].copy_from_slice(&pack.0);
    r[32..].copy_from_slice(&blob.0);
    r
}

fn pack_blob_from(r: &[u8; 64]) -> (Id, Id) {
    let (pack, blob) = r.split_at(32);
    (
        Id(pack.try_into().expect("32 bytes")),
        Id(blob.try_into().expect("32 bytes")),
    )
}

/// Checks a pack's id, header, and every blob; returns the number of blobs or what is wrong.
fn verify_pack(
    repo: &Repository,
    pack: &Id,
    bytes: &[u8],
    indexed: &HashSet<Id>,
) -> Result<usize, String> {
    let entries = verified_header(repo.keys(), pack, bytes).map_err(|e| e.to_string())?;
    for entry in &entries {
        let loc = crate::repo::index::Location {
            pack: *pack,
            entry: *entry,
        };
        let sealed = &bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
        repo.decode_blob(&entry.id, &loc, sealed)
            .map_err(|e| e.to_string())?;
    }
    let in_header: HashSet<Id> = entries.iter().map(|e| e.id).collect();
    if let Some(missing) = indexed.iter().find(|id| !in_header.contains(id)) {
        return Err(format!(
            "the index places blob {missing} here but the pack lacks it"
        ));
    }
    Ok(entries.len())
}

/// Finds the snapshot paths that need a damaged pack.
async fn map_damage(
    repo: &Repository,
    snapshots: &[(Id, crate::format::snapshot::Snapshot)],
    blobs_by_pack: &HashMap<Id, Vec<Id>>,
    damaged: BTreeMap<Id, (PackDamage, String)>,
    report: &mut CheckReport,
) -> Result<()> {
    let mut pack_of: HashMap<Id, Id> = HashMap::new();
    for pack in damaged.keys() {
        for blob in blobs_by_pack.get(pack).into_iter().flatten() {
            pack_of.insert(*blob, *pack);
        }
    }
    let mut affected: BTreeMap<Id, Vec<String>> = BTreeMap::new();
    for (snap_id, snap) in snapshots {
        let snapshot = snap_id.short();
        if let Some(pack) = pack_of.get(&snap.tree) {
            affected
                .entry(*pack)
                .or_default()
                .push(format!("{snapshot}:/"));
            continue;
        }
        let Ok(mut walk) = Walk::snapshot(repo, snap).await else {
            continue;
        };
        // Trees that cannot be read were reported above; the walk goes on past them.
        while let Some(step) = walk.next().await.transpose() {
            let Ok((rel, node)) = step else {
                continue;
            };
            let path = rel.display();
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    if let Some(pack) = pack_of.get(&sub) {
                        let dir = format!("{snapshot}:/{path}/");
                        affected.entry(*pack).or_default().push(dir);
                        walk.skip();
                    }
                }
                _ => {
                    if let Some(pack) = node.blobs().find_map(|b| pack_of.get(b)) {
                        let file = format!("{snapshot}:/{path}");
                        affected.entry(*pack).or_default().push(file);
                    }
                }
            }
        }
    }
    for (pack, (damage, reason)) in damaged {
        let mut paths = affected.remove(&pack).unwrap_or_default();
        if damage == PackDamage::Missing && paths.is_empty() {
            report.notes.push(format!(
                "index names pack {pack}, which is missing; no snapshot needs its blobs \
                 (prune or `stowage repair index` drops it)"
            ));
            continue;
        }
        paths.sort();
        report.damaged_packs.push(DamagedPack {
            pack,
            damage,
            reason,
            affected: paths,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_a_subset_cover_every_pack_once_and_shares_and_sizes_are_bounded() {
        let packs: HashMap<Id, u64> = (0..200u32)
            .map(|n| (Id::hash_of(&n.to_le_bytes()), 10))
            .collect();
        let mut seen = HashSet::new();
        for n in 1..=7 {
            let part = DataSubset::Part { n, t: 7 };
            for pack in part.select(&packs).keys() {
                assert!(seen.insert(*pack), "{pack} in two parts");
            }
        }
        assert_eq!(seen.len(), packs.len());
        assert_eq!(DataSubset::Share(0.25).select(&packs).len(), 50);
        assert_eq!(DataSubset::Share(1.0).select(&packs).len(), 200);
        // Up to the budget: packs are taken while the total is below it.
        assert_eq!(DataSubset::Bytes(95).select(&packs).len(), 10);
        assert_eq!(DataSubset::Bytes(1).select(&packs).len(), 1);
    }
}
