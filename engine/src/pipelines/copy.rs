//! The copy pipeline (offsite replication, FORMAT.md "Copies"): plan — skip snapshots the
//! destination already holds, walk the others' trees, list the blobs the destination lacks by
//! source pack — then execute: read those blobs pack by pack, verify each, and pack them
//! sealed as they are (both repositories share keys) -> index -> the snapshots, oldest first.
//!
//! A copy that stops midway is finished by running it again: the packer indexes packs as
//! they land, so the next run finds those blobs in the destination and reads only the rest.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::extsort::{sort_memory, Sorted, Sorter};
use crate::format::id::Id;
use crate::format::pack::{Pack, PackEntry};
use crate::format::snapshot::Snapshot;
use crate::progress::Progress;
use crate::repo::index::{placed, unplaced, Location, PLACED};
use crate::repo::packer::Packer;
use crate::repo::Repository;
use crate::runtime;

/// Blobs of one pack closer than this are fetched in one read, the gap read over.
const MAX_GAP: u64 = 1 << 20;
/// A read spans at most this many bytes (or one blob, when that is larger).
const MAX_READ: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Packs in the destination are closed at about this size.
    pub pack_size: usize,
    /// Reads from the source under way at once; each holds at most about 16 MiB.
    pub reads: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            pack_size: 16 << 20,
            reads: 3,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CopySummary {
    pub snapshots_copied: usize,
    /// Snapshots the destination already held a copy of.
    pub snapshots_skipped: usize,
    pub blobs_copied: u64,
    /// Plaintext bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Bytes added to the destination (packs and index files).
    pub stored_bytes: u64,
    pub packs: u64,
}

/// What a copy will do; computed before anything is written.
#[derive(Debug, Default)]
pub struct CopyPlan {
    /// Snapshots to copy, oldest first.
    pub snapshots: Vec<(Id, Snapshot)>,
    /// Snapshots the destination already holds a copy of.
    pub skipped: Vec<Id>,
    /// Blobs the destination lacks.
    pub blobs: u64,
    /// Their sealed bytes, as read from the source.
    pub bytes: u64,
    /// The blobs to read, by place in the source (see `extsort`).
    reads: Reads,
    /// Destination packs holding the blobs it already has.
    relied: HashSet<Id>,
}

/// The source locations of the blobs to copy, sorted by pack and offset.
#[derive(Default)]
struct Reads(Sorted<PLACED>);

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reads(..)")
    }
}

/// One ranged read of a source pack and the needed blobs in it.
#[derive(Debug)]
struct PackRead {
    pack: Id,
    range: Range<u64>,
    entries: Vec<PackEntry>,
}

/// Copies `snapshots` (of `src`) into `dst`, which must share `src`'s keys (created with
/// [`Repository::init_from`]).
pub async fn copy(
    src: Arc<Repository>,
    dst: Arc<Repository>,
    snapshots: Vec<(Id, Snapshot)>,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary> {
    copy_with(src, dst, snapshots, CopyOptions::default(), progress).await
}

/// [`copy`] with options.
pub async fn copy_with(
    src: Arc<Repository>,
    dst: Arc<Repository>,
    snapshots: Vec<(Id, Snapshot)>,
    opts: CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary> {
    crate::repo::packer::adopt_unindexed(&dst).await?;
    crate::repo::packer::heal_missing_packs(&dst, progress.as_ref()).await?;
    progress.phase("copy: plan", None);
    let plan = plan(&src, &dst, snapshots).await?;
    let mut summary = CopySummary {
        snapshots_skipped: plan.skipped.len(),
        ..CopySummary::default()
    };
    progress.phase("copy", Some(plan.bytes));
    let packer = Packer::start(Arc::clone(&dst), opts.pack_size);
    futures::stream::iter(GroupReads::new(plan.reads.0.map(|r| Ok(unplaced(&r?)?.0))))
        .map(|read| async {
            transfer(Arc::clone(&src), Arc::clone(&packer), read?, &progress).await
        })
        .buffer_unordered(opts.reads.max(1))
        .try_collect::<()>()
        .await?;
    let written = packer.finish().await?;
    summary.blobs_copied = written.new_blobs;
    summary.bytes_copied = written.new_bytes;
    summary.stored_bytes = written.stored_bytes;
    summary.packs = written.new_packs;

    // Last, oldest first: only now is every blob they need durable and indexed.
    progress.phase("copy: snapshots", None);
    let copies: Vec<Snapshot> = plan
        .snapshots
        .into_iter()
        .map(|(id, snap)| Snapshot {
            original: Some(snap.origin(id)),
            ..snap
        })
        .collect();
    let mut relied = plan.relied;
    relied.extend(written.relied);
    summary.snapshots_copied = crate::repo::commit::commit(&dst, copies, &relied)
        .await?
        .len();
    Ok(summary)
}

/// Decides what copying `snapshots` from `src` to `dst` takes. Fails when the two do not
/// share keys.
pub async fn plan(
    src: &Repository,
    dst: &Repository,
    snapshots: Vec<(Id, Snapshot)>,
) -> Result<CopyPlan> {
    if !src.keys().same_material(dst.keys()) {
        return Err(Error::KeysDiffer {
            src: src.store().describe(),
            dst: dst.store().describe(),
        });
    }
    let mut held: HashSet<Id> = dst
        .snapshots()
        .await?
        .iter()
        .map(|(id, snap)| snap.origin(*id))
        .collect();
    let mut plan = CopyPlan::default();
    for (id, snap) in snapshots {
        if held.insert(snap.origin(id)) {
            plan.snapshots.push((id, snap));
        } else {
            plan.skipped.push(id);
        }
    }
    plan.snapshots
        .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));

    // Every tree is walked, also those the destination holds: after an interrupted copy a
    // tree may be indexed while its children are not.
    let mut missing = Missing::default();
    for id in crate::repo::reach::reachable(src, plan.snapshots.iter().map(|(_, s)| s)).await? {
        missing.want(src, dst, Id(id?))?;
    }
    plan.blobs = missing.blobs;
    plan.bytes = missing.bytes;
    plan.reads = Reads(missing.wanted.sorted()?);
    plan.relied = missing.relied;
    Ok(plan)
}

/// The blobs the destination lacks, by where the source holds them.
struct Missing {
    blobs: u64,
    /// Their sealed bytes.
    bytes: u64,
    /// Destination packs holding blobs the destination already has.
    relied: HashSet<Id>,
    wanted: Sorter<PLACED>,
}

impl Default for Missing {
    fn default() -> Self {
        Missing {
            blobs: 0,
            bytes: 0,
            relied: HashSet::new(),
            wanted: Sorter::new(sort_memory()),
        }
    }
}

impl Missing {
    /// Notes blob `id` (each blob once) as needed.
    fn want(&mut self, src: &Repository, dst: &Repository, id: Id) -> Result<()> {
        if let Some(pack) = dst.index().usable(&id)? {
            self.relied.insert(pack);
            return Ok(());
        }
        let loc = src.index().lookup(&id)?.ok_or(Error::MissingBlob(id))?;
        self.blobs += 1;
        self.bytes += u64::from(loc.entry.length);
        self.wanted.push(placed(&loc, 0))
    }
}

/// Splits blobs sorted by pack and offset into reads: neighbours in a pack closer than
/// [`MAX_GAP`] share a read, up to [`MAX_READ`] bytes.
struct GroupReads<I: Iterator> {
    blobs: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Result<Location>>> GroupReads<I> {
    fn new(blobs: I) -> Self {
        GroupReads {
            blobs: blobs.peekable(),
        }
    }
}

impl<I: Iterator<Item = Result<Location>>> Iterator for GroupReads<I> {
    type Item = Result<PackRead>;

    fn next(&mut self) -> Option<Result<PackRead>> {
        let first = match self.blobs.next()? {
            Ok(first) => first,
            Err(e) => return Some(Err(e)),
        };
        let mut read = PackRead {
            pack: first.pack,
            range: first.entry.range(),
            entries: vec![first.entry],
        };
        while let Some(Ok(next)) = self.blobs.peek() {
            let range = next.entry.range();
            let near = next.pack == read.pack
                && range.start.saturating_sub(read.range.end) <= MAX_GAP
                && range.end.saturating_sub(read.range.start) <= MAX_READ;
            if !near {
                break;
            }
            read.range.end = read.range.end.max(range.end);
            read.entries.push(next.entry);
            self.blobs.next();
        }
        Some(Ok(read))
    }
}

/// Reads one range of a source pack, verifies every needed blob in it and hands the sealed
/// bytes to the destination's packer.
async fn transfer(
    src: Arc<Repository>,
    packer: Arc<Packer>,
    read: PackRead,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let bytes = src
        .store()
        .get_range(&Pack::key(&read.pack), read.range.clone())
        .await?;
    if bytes.len() as u64 != read.range.end - read.range.start {
        return Err(Error::corrupt(
            format!("pack {}", read.pack),
            "cut short (pack truncated)",
        ));
    }
    let progress = Arc::clone(progress);
    // Decompressing and hashing is CPU work: off the async threads.
    runtime::blocking("a copy worker", move || {
        for entry in &read.entries {
            let start = (entry.range().start - read.range.start) as usize;
            let sealed = bytes
                .get(start..start + entry.length as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {}", read.pack), "bad blob range"))?;
            let loc = Location {
                pack: read.pack,
                entry: *entry,
            };
            // Checks the seal and that the plaintext has this id: never copy damage along.
            src.decode_blob(&entry.id, &loc, sealed)?;
            let full = packer.add_sealed(
                entry.kind,
                entry.id,
                entry.compression,
                entry.raw_length as usize,
                sealed,
            )?;
            packer.submit_blocking(full)?;
            progress.advance(u64::from(entry.length));
        }
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::Compression;
    use crate::format::pack::BlobKind;

    fn entry(offset: u32, length: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            compression: Compression::None,
            id: Id::hash_of(&offset.to_le_bytes()),
            offset,
            length,
            raw_length: length,
        }
    }

    #[test]
    fn reads_join_near_blobs_and_split_far_or_large_ones() {
        let mib = 1u32 << 20;
        let pack = Id([1; 32]);
        let entries = vec![
            entry(3 * mib, 100), // far from the first two: its own read
            entry(0, 1000),
            entry(1000 + 500, 2000),        // a small gap: read over
            entry(3 * mib + 200, 16 * mib), // near, but the read would pass MAX_READ
        ];
        let mut entries = entries;
        entries.sort_by_key(|e| e.offset);
        let blobs = entries
            .into_iter()
            .map(|entry| Ok(Location { pack, entry }));
        let reads = GroupReads::new(blobs).collect::<Result<Vec<_>>>().unwrap();
        let ranges: Vec<_> = reads.iter().map(|r| r.range.clone()).collect();
        let m = u64::from(mib);
        assert_eq!(
            ranges,
            vec![0..3500, 3 * m..3 * m + 100, 3 * m + 200..19 * m + 200],
            "{reads:?}"
        );
        assert_eq!(reads[0].entries.len(), 2);
    }
}
