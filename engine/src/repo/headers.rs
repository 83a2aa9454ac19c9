//! The headers of the tree packs a walk keeps coming back to, sorted by blob id: a
//! directory's tree is found there without a lookup in the local cache's index. A backup
//! of an unchanged registry loads the parent snapshot's tree of every directory (a million
//! of them), and each lookup of a random id in an index larger than its block cache costs a
//! read; the trees of a snapshot sit together in a few packs, whose headers name tens of
//! thousands of them each.
//!
//! A pack's header is read only once the index has sent [`READ_AFTER`] lookups to it since
//! it was last kept, so a walk that meets a pack for a few trees only does not pay for its
//! header; [`KEPT`] headers are kept, the least recently read dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::format::compress::Compression;
use crate::format::id::Id;
use crate::format::pack::{BlobKind, PackEntry};
use crate::repo::index::Location;

/// Headers kept: about 1.5 MiB each for a 16 MiB pack of registry trees.
const KEPT: usize = 4;

/// Lookups the index sends to a pack before its header is read.
const READ_AFTER: u32 = 16;

/// Packs whose lookups are counted at once; the counts start again beyond.
const COUNTED: usize = 1024;

#[derive(Default)]
pub struct PackHeaders {
    state: RwLock<State>,
    /// A header is being read (one at a time: each read holds a few MiB for a moment).
    reading: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Each kept pack's trees, sorted by id; most recently read last.
    kept: VecDeque<(Id, Arc<Vec<Slot>>)>,
    /// Lookups the index answered with each pack since it was last kept.
    lookups: HashMap<Id, u32>,
}

/// A tree's entry as kept: the first 16 bytes of its id stand for the id (a wrong match
/// would fail the blob's id check when read, never give another tree), the rest as in the
/// header; a third of the memory of a [`PackEntry`].
struct Slot {
    id: u128,
    offset: u32,
    length: u32,
    raw_length: u32,
    compression: Compression,
}

fn prefix(id: &Id) -> u128 {
    u128::from_be_bytes(id.0[..16].try_into().expect("ids are 32 bytes"))
}

/// The right to read one header, given by [`PackHeaders::looked_up`]: another may be read
/// once it is dropped.
pub struct Reading<'a>(&'a PackHeaders);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.reading.store(false, Ordering::Release);
    }
}

impl PackHeaders {
    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the kept headers put the tree `id`.
    pub fn find(&self, id: &Id) -> Option<Location> {
        let wanted = prefix(id);
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.kept.iter().rev().find_map(|(pack, trees)| {
            let at = trees.binary_search_by(|t| t.id.cmp(&wanted)).ok()?;
            let tree = &trees[at];
            Some(Location {
                pack: *pack,
                entry: PackEntry {
                    kind: BlobKind::Tree,
                    compression: tree.compression,
                    id: *id,
                    offset: tree.offset,
                    length: tree.length,
                    raw_length: tree.raw_length,
                },
            })
        })
    }

    /// Counts a lookup that the index answered with `pack`; the right to read the pack's
    /// header when that is now worth it (and no other header is being read), for one
    /// caller, which then [`keep`](Self::keep)s it.
    pub fn looked_up(&self, pack: &Id) -> Option<Reading<'_>> {
        let mut state = self.state();
        if state.kept.iter().any(|(p, _)| p == pack) {
            return None;
        }
        if state.lookups.len() >= COUNTED && !state.lookups.contains_key(pack) {
            state.lookups.clear();
        }
        let count = state.lookups.entry(*pack).or_default();
        *count += 1;
        if *count < READ_AFTER || self.reading.swap(true, Ordering::Acquire) {
            return None;
        }
        state.lookups.remove(pack);
        Some(Reading(self))
    }

    /// Drops the header of `pack` (gone, or damaged since it was read).
    pub fn forget(&self, pack: &Id) {
        self.state().kept.retain(|(p, _)| p != pack);
    }

    /// Keeps the trees of `pack`'s header, dropping the oldest header beyond the bound.
    pub fn keep(&self, _reading: Reading<'_>, pack: Id, entries: Vec<PackEntry>) {
        let mut trees: Vec<Slot> = entries
            .iter()
            .filter(|e| e.kind == BlobKind::Tree)
            .map(|e| Slot {
                id: prefix(&e.id),
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                compression: e.compression,
            })
            .collect();
        drop(entries);
        trees.sort_unstable_by_key(|t| t.id);
        let mut state = self.state();
        if state.kept.len() >= KEPT {
            state.kept.pop_front();
        }
        state.kept.push_back((pack, Arc::new(trees)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &[u8], offset: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Tree,
            compression: Compression::Zstd,
            id: Id::hash_of(name),
            offset,
            length: 10,
            raw_length: 20,
        }
    }

    #[test]
    fn a_header_is_read_after_enough_lookups_and_finds_its_trees() {
        let headers = PackHeaders::default();
        let pack = Id::hash_of(b"pack");
        for _ in 1..READ_AFTER {
            assert!(headers.looked_up(&pack).is_none(), "too few lookups yet");
        }
        let reading = headers.looked_up(&pack).expect("read after enough lookups");
        let other = Id::hash_of(b"other");
        for _ in 0..READ_AFTER {
            assert!(
                headers.looked_up(&other).is_none(),
                "one header read at a time"
            );
        }
        let mut data = tree(b"data", 0);
        data.kind = BlobKind::Data;
        headers.keep(reading, pack, vec![tree(b"b", 10), data, tree(b"a", 20)]);
        assert!(headers.looked_up(&other).is_some(), "the other's turn now");
        let found = headers.find(&Id::hash_of(b"a")).expect("kept");
        assert_eq!((found.pack, found.entry.offset), (pack, 20));
        assert_eq!(found.entry.id, Id::hash_of(b"a"));
        assert_eq!(
            headers.find(&Id::hash_of(b"b")).map(|l| l.entry.offset),
            Some(10)
        );
        assert!(headers.find(&Id::hash_of(b"data")).is_none(), "trees only");
        assert!(headers.looked_up(&pack).is_none(), "kept: not read again");
        headers.forget(&pack);
        assert!(headers.find(&Id::hash_of(b"a")).is_none(), "forgotten");
    }

    #[test]
    fn the_oldest_header_goes_first() {
        let headers = PackHeaders::default();
        for (n, name) in [b"p1", b"p2", b"p3", b"p4", b"p5"].iter().enumerate() {
            let reading = Reading(&headers);
            headers.keep(reading, Id::hash_of(*name), vec![tree(*name, n as u32)]);
        }
        assert!(headers.find(&Id::hash_of(b"p1")).is_none(), "dropped");
        for kept in [b"p2", b"p3", b"p4", b"p5"] {
            assert!(headers.find(&Id::hash_of(kept)).is_some());
        }
    }
}
