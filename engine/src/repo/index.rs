//! The index: which blob lives in which pack, where (FORMAT.md, "Index files" and "The local
//! cache").
//!
//! `index/<id>` objects in the repository are the truth. The engine reads them through a
//! local [`KvStore`] cache so lookups cost no memory however large the repository grows:
//!
//! | cache key | value |
//! |---|---|
//! | `b` + blob id | pack id + pack entry (78 bytes) |
//! | `x` + index file id | empty: that index file is already in the cache |
//! | `p` + pack id | empty: an index file names that pack |
//! | `D` + sha256 digest | a registry blob's size and content (chunks or gzip content) |
//! | `u` + pack id | a pack this host stored that no index file names yet, and its entries |
//! | `s-rebuild` | empty: a rebuild is under way (an interrupted one starts over) |
//! | `s-marked` | the packs marked at the last sync (ids, concatenated) |
//!
//! Deleting the cache loses nothing: [`Index::sync`] rebuilds it from `index/`. The `u`
//! records only let the next run index the packs a killed run stored
//! ([`adopt_unindexed`](crate::repo::packer::adopt_unindexed)).
//!
//! The index also knows which packs a prune has marked (FORMAT.md, "Prune"): a blob whose
//! only known copy is in a marked pack can still be read but is not [`usable`](Index::usable)
//! for deduplication.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use stowage_backends::{KvStore, Store};

use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::Keys;
use crate::format::id::Id;
use crate::format::index_file::{decode_index_file, encode_entries, PackList};
use crate::format::pack::{decode_entries, PackEntry, ENTRY_LEN};

const BLOB: u8 = b'b';
const INDEX_FILE: u8 = b'x';
/// Registry digest -> content; `D` since content may be gzip content (the `d` records of
/// earlier versions, chunk lists only, are no longer read).
const DIGEST: u8 = b'D';
const UNINDEXED: u8 = b'u';
const PACK: u8 = b'p';
/// Present while a rebuild of the `b` and `x` records is under way.
const REBUILD_PENDING: &[u8] = b"s-rebuild";
/// The packs marked when the cache was last synced.
const MARKED_AT_LAST_SYNC: &[u8] = b"s-marked";

/// Records [`Index::add`] writes at once.
const ADD_BATCH: usize = 4096;

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub entry: PackEntry,
}

impl Location {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + ENTRY_LEN);
        out.extend_from_slice(&self.pack.0);
        self.entry.encode(&mut out);
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 32 + ENTRY_LEN {
            return None;
        }
        Some(Location {
            pack: Id::from_slice(&b[..32])?,
            entry: PackEntry::decode(&b[32..])?,
        })
    }
}

/// A location and a number (the walk's tag, or 0) as a record that sorts by pack, then by
/// offset in it: for reading blobs in the order they are stored (see `extsort`).
pub(crate) const PLACED: usize = 32 + 4 + 4 + ENTRY_LEN;

pub(crate) fn placed(loc: &Location, tag: u32) -> [u8; PLACED] {
    let mut r = [0; PLACED];
    r[..32].copy_from_slice(&loc.pack.0);
    r[32..36].copy_from_slice(&loc.entry.offset.to_be_bytes());
    r[36..40].copy_from_slice(&tag.to_be_bytes());
    let mut entry = Vec::with_capacity(ENTRY_LEN);
    loc.entry.encode(&mut entry);
    r[40..].copy_from_slice(&entry);
    r
}

pub(crate) fn unplaced(r: &[u8; PLACED]) -> Result<(Location, u32)> {
    let entry = PackEntry::decode(&r[40..])
        .ok_or_else(|| Error::Bug("a sorted location does not decode".into()))?;
    let loc = Location {
        pack: Id(r[..32].try_into().expect("32 bytes")),
        entry,
    };
    Ok((
        loc,
        u32::from_be_bytes(r[36..40].try_into().expect("4 bytes")),
    ))
}

/// Reads and decodes `index/<id>`.
pub async fn read_index_file(store: &dyn Store, keys: &Keys, id: Id) -> Result<PackList> {
    let sealed: Bytes = store.get(&format!("index/{id}")).await?;
    let what = || format!("index file {id}");
    let plain = keys.open(&sealed, what)?;
    decode_index_file(&plain, what)
}

/// The ids of the `index/` objects.
pub async fn list_index_files(store: &dyn Store) -> Result<Vec<Id>> {
    Ok(store
        .list("index/")
        .await?
        .iter()
        .filter_map(|m| m.key.strip_prefix("index/")?.parse().ok())
        .collect())
}

fn key(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(prefix);
    k.extend_from_slice(id);
    k
}

/// A registry blob's content as a previous backup stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub size: u64,
    pub content: crate::format::tree::Content,
}

/// Lookups of what the repository holds, through the local cache.
#[derive(Clone)]
pub struct Index {
    kv: Arc<dyn KvStore>,
    /// Packs marked by a prune, as of the last sync.
    marked: Arc<RwLock<HashSet<Id>>>,
    /// Index files that did not authenticate or decode at the last sync, and why.
    damaged: Arc<RwLock<Vec<(Id, String)>>>,
    /// Packs the index names that a backup found missing from the store: their blobs are
    /// not relied on, so the backup stores them again.
    missing: Arc<RwLock<HashSet<Id>>>,
}

/// What a sync did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    pub index_files_read: usize,
    pub rebuilt: bool,
}

impl Index {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Index {
            kv,
            marked: Arc::default(),
            damaged: Arc::default(),
            missing: Arc::default(),
        }
    }

    fn marked(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Id>> {
        self.marked.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_marked(&self, pack: &Id) -> bool {
        self.marked().contains(pack)
    }

    /// Notes the packs found missing from the store, which no new snapshot may rely on.
    pub fn set_missing(&self, packs: HashSet<Id>) {
        *self.missing.write().unwrap_or_else(|e| e.into_inner()) = packs;
    }

    /// Whether a new snapshot may rely on a blob in `pack`: not marked by a prune, not
    /// found missing.
    pub fn usable_pack(&self, pack: &Id) -> bool {
        let missing = self.missing.read().unwrap_or_else(|e| e.into_inner());
        !self.is_marked(pack) && !missing.contains(pack)
    }

    /// The pack holding a copy of the blob that a new snapshot may rely on: none when the
    /// blob is unknown or its known copy is in a pack a prune marked for deletion or one
    /// found missing.
    pub fn usable(&self, id: &Id) -> Result<Option<Id>> {
        Ok(self
            .lookup(id)?
            .map(|loc| loc.pack)
            .filter(|pack| self.usable_pack(pack)))
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<Location>> {
        match self.kv.get(&key(BLOB, &id.0))? {
            None => Ok(None),
            Some(v) => Location::decode(&v)
                .map(Some)
                .ok_or_else(|| Error::corrupt("local cache", "bad blob location record")),
        }
    }

    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.kv.get(&key(BLOB, &id.0))?.is_some())
    }

    /// Records the packs of one index file, and the file itself, in the cache. A location
    /// in a marked pack does not replace one already known. Written a few thousand records
    /// at a time (an index file names up to 50,000 blobs), the index file's own record last:
    /// the cache knows the file only once it knows all it names, and a crash in between
    /// leaves records that the next reading of the file writes again.
    pub fn add(&self, index_file: Id, packs: &[(Id, Vec<PackEntry>)]) -> Result<()> {
        let (doomed, live): (Vec<_>, Vec<_>) = {
            let marked = self.marked();
            packs.iter().partition(|(pack, _)| marked.contains(pack))
        };
        let mut batch = Vec::with_capacity(ADD_BATCH);
        // The marked packs first, so that a copy in a live pack of the same file wins.
        for (doomed, (pack, entries)) in doomed
            .into_iter()
            .map(|p| (true, p))
            .chain(live.into_iter().map(|p| (false, p)))
        {
            for entry in entries {
                if doomed && self.contains(&entry.id)? {
                    continue;
                }
                let loc = Location {
                    pack: *pack,
                    entry: *entry,
                };
                batch.push((key(BLOB, &entry.id.0), loc.encode()));
                if batch.len() >= ADD_BATCH {
                    self.kv.put_batch(&batch)?;
                    batch.clear();
                }
            }
            batch.push((key(PACK, &pack.0), Vec::new()));
        }
        batch.push((key(INDEX_FILE, &index_file.0), Vec::new()));
        self.kv.put_batch(&batch)?;
        Ok(())
    }

    /// Every blob location in the cache, in blob id order.
    pub fn for_each(&self, f: &mut dyn FnMut(Id, Location)) -> Result<()> {
        let mut bad = false;
        self.kv.scan_prefix(&[BLOB], &mut |k, v| {
            match (Id::from_slice(&k[1..]), Location::decode(v)) {
                (Some(id), Some(loc)) => f(id, loc),
                _ => bad = true,
            }
            true
        })?;
        if bad {
            return Err(Error::corrupt("local cache", "bad blob location record"));
        }
        Ok(())
    }

    fn known_index_files(&self) -> Result<HashSet<Id>> {
        let mut known = HashSet::new();
        self.kv.scan_prefix(&[INDEX_FILE], &mut |k, _| {
            if let Some(id) = Id::from_slice(&k[1..]) {
                known.insert(id);
            }
            true
        })?;
        Ok(known)
    }

    /// Every pack an index file names (a pack whose blobs all have a copy elsewhere too).
    pub fn packs(&self) -> Result<HashSet<Id>> {
        let mut packs = HashSet::new();
        self.kv.scan_prefix(&[PACK], &mut |k, _| {
            packs.extend(Id::from_slice(&k[1..]));
            true
        })?;
        Ok(packs)
    }

    fn clear(&self) -> Result<()> {
        for prefix in [INDEX_FILE, BLOB, PACK] {
            let mut keys = Vec::new();
            self.kv.scan_prefix(&[prefix], &mut |k, _| {
                keys.push(k.to_vec());
                true
            })?;
            for batch in keys.chunks(10_000) {
                self.kv.delete_batch(batch)?;
            }
        }
        Ok(())
    }

    /// Brings the cache up to date with the repository's `index/` and `marks/` objects.
    ///
    /// The cache is rebuilt from scratch when an index file went away (prune rewrote it:
    /// locations of deleted packs must go) or a pack was newly marked (a location there
    /// should give way to a copy in an unmarked pack). A rebuild is recorded as pending
    /// until it completes, so one that was interrupted is started over.
    pub async fn sync(&self, store: &dyn Store, keys: &Keys) -> Result<SyncReport> {
        let marked = crate::repo::marks::load(store, keys).await?.packs();
        let newly_marked = !marked.is_subset(&self.marked_at_last_sync()?);
        *self.marked.write().unwrap_or_else(|e| e.into_inner()) = marked.clone();
        let listed: HashSet<Id> = list_index_files(store).await?.into_iter().collect();
        let mut known = self.known_index_files()?;
        let mut report = SyncReport::default();
        let pending = self.kv.get(REBUILD_PENDING)?.is_some();
        // A cache written before `p` records existed.
        let mut any_pack = false;
        self.kv.scan_prefix(&[PACK], &mut |_, _| {
            any_pack = true;
            false
        })?;
        let old_format = !known.is_empty() && !any_pack;
        if pending || newly_marked || old_format || !known.is_subset(&listed) {
            self.kv
                .put_batch(&[(REBUILD_PENDING.to_vec(), Vec::new())])?;
            self.clear()?;
            known.clear();
            report.rebuilt = true;
        }
        let missing: Vec<Id> = listed.difference(&known).copied().collect();
        report.index_files_read = missing.len();
        // A damaged index file is left out and named: the rest still index their packs. It
        // is read again at every sync, so the damage stays visible until it is repaired.
        let mut reads = futures::stream::iter(missing)
            .map(|id| async move { (id, read_index_file(store, keys, id).await) })
            .buffer_unordered(8);
        let mut damaged = Vec::new();
        while let Some((id, read)) = reads.next().await {
            match read {
                Ok(packs) => self.add(id, &packs)?,
                // Rewritten by a prune since the listing.
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) if e.kind() == ErrorKind::Damaged => damaged.push((id, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        damaged.sort();
        *self.damaged.write().unwrap_or_else(|e| e.into_inner()) = damaged;
        let marked: Vec<u8> = marked.iter().flat_map(|id| id.0).collect();
        self.kv
            .put_batch(&[(MARKED_AT_LAST_SYNC.to_vec(), marked)])?;
        if report.rebuilt {
            self.kv.delete_batch(&[REBUILD_PENDING.to_vec()])?;
        }
        Ok(report)
    }

    /// The index files the last sync could not use (they do not authenticate or decode),
    /// and why. The packs only they name look unindexed.
    pub fn damaged(&self) -> Vec<(Id, String)> {
        self.damaged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn marked_at_last_sync(&self) -> Result<HashSet<Id>> {
        let Some(v) = self.kv.get(MARKED_AT_LAST_SYNC)? else {
            return Ok(HashSet::new());
        };
        if v.len() % 32 != 0 {
            return Err(Error::corrupt("local cache", "bad marked-packs record"));
        }
        Ok(v.chunks(32).filter_map(Id::from_slice).collect())
    }

    /// Notes a pack this host stored before any index file names it.
    pub fn note_unindexed(&self, pack: &Id, entries: &[PackEntry]) -> Result<()> {
        self.kv
            .put_batch(&[(key(UNINDEXED, &pack.0), encode_entries(entries))])?;
        Ok(())
    }

    /// Forgets notes of packs now indexed.
    pub fn clear_unindexed(&self, packs: &[Id]) -> Result<()> {
        let keys: Vec<Vec<u8>> = packs.iter().map(|p| key(UNINDEXED, &p.0)).collect();
        self.kv.delete_batch(&keys)?;
        Ok(())
    }

    /// Packs a run on this host stored but never indexed (it was killed).
    pub fn unindexed(&self) -> Result<Vec<(Id, Vec<PackEntry>)>> {
        let mut found = Vec::new();
        let mut bad = false;
        self.kv.scan_prefix(&[UNINDEXED], &mut |k, v| {
            match (Id::from_slice(&k[1..]), decode_entries(v, String::new)) {
                (Some(id), Ok(entries)) => found.push((id, entries)),
                _ => bad = true,
            }
            true
        })?;
        if bad {
            return Err(Error::corrupt("local cache", "bad unindexed-pack record"));
        }
        Ok(found)
    }

    pub fn digest(&self, sha256: &[u8; 32]) -> Result<Option<DigestRecord>> {
        let Some(v) = self.kv.get(&key(DIGEST, sha256))? else {
            return Ok(None);
        };
        let bad = || Error::corrupt("local cache", "bad digest record");
        let (size, content) = v.split_first_chunk::<8>().ok_or_else(bad)?;
        let content = serde_json::from_slice(content).map_err(|_| bad())?;
        Ok(Some(DigestRecord {
            size: u64::from_le_bytes(*size),
            content,
        }))
    }

    pub fn set_digest(&self, sha256: &[u8; 32], record: &DigestRecord) -> Result<()> {
        let mut v = record.size.to_le_bytes().to_vec();
        serde_json::to_writer(&mut v, &record.content).expect("content serializes");
        self.kv.put_batch(&[(key(DIGEST, sha256), v)])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::Compression;
    use crate::format::index_file::encode_index_file;
    use crate::format::pack::BlobKind;
    use stowage_backends::memory::MemoryStore;
    use stowage_backends::MemoryKv;

    fn entry(n: u8) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            compression: Compression::None,
            id: Id([n; 32]),
            offset: u32::from(n) * 10,
            length: 10,
            raw_length: 8,
        }
    }

    #[test]
    fn index_file_round_trip_and_truncation() {
        let packs = vec![
            (Id([9; 32]), vec![entry(1), entry(2)]),
            (Id([8; 32]), vec![]),
        ];
        let bytes = encode_index_file(&packs);
        assert_eq!(
            decode_index_file(&bytes, String::new).expect("decode"),
            packs
        );
        assert!(decode_index_file(&bytes[..bytes.len() - 5], String::new).is_err());
        assert!(decode_index_file(b"garbage!", String::new).is_err());
    }

    #[tokio::test]
    async fn sync_reads_new_files_and_rebuilds_when_one_vanishes() {
        let store = MemoryStore::new();
        let keys = Keys::random();
        let index = Index::new(Arc::new(MemoryKv::new()));
        let put = |packs: Vec<(Id, Vec<PackEntry>)>| {
            let sealed = keys.seal(&encode_index_file(&packs));
            let id = Id::hash_of(&sealed);
            (format!("index/{id}"), Bytes::from(sealed))
        };
        let (k1, v1) = put(vec![(Id([9; 32]), vec![entry(1)])]);
        let (k2, v2) = put(vec![(Id([7; 32]), vec![entry(2)])]);
        store.put(&k1, v1).await.expect("put");
        store.put(&k2, v2).await.expect("put");
        let report = index.sync(&store, &keys).await.expect("sync");
        assert_eq!(report.index_files_read, 2);
        let loc = index.lookup(&Id([2; 32])).expect("lookup").expect("found");
        assert_eq!(loc.pack, Id([7; 32]));
        assert_eq!(
            index
                .sync(&store, &keys)
                .await
                .expect("sync")
                .index_files_read,
            0
        );
        store.delete(&k2).await.expect("delete");
        let report = index.sync(&store, &keys).await.expect("sync");
        assert!(report.rebuilt);
        assert!(!index.contains(&Id([2; 32])).expect("contains"));
        assert!(index.contains(&Id([1; 32])).expect("contains"));
    }

    #[tokio::test]
    async fn an_interrupted_rebuild_starts_over_and_new_marks_rebuild() {
        let store = MemoryStore::new();
        let keys = Keys::random();
        let index = Index::new(Arc::new(MemoryKv::new()));
        let plain = encode_index_file(&[(Id([9; 32]), vec![entry(1)])]);
        let sealed = keys.seal(&plain);
        let name = format!("index/{}", Id::hash_of(&sealed));
        store.put(&name, Bytes::from(sealed)).await.expect("put");
        assert!(!index.sync(&store, &keys).await.expect("sync").rebuilt);

        // A rebuild killed after its `x` records went but before the stale `b` ones did.
        let stale = Location {
            pack: Id([7; 32]),
            entry: entry(5),
        };
        index
            .kv
            .put_batch(&[
                (REBUILD_PENDING.to_vec(), Vec::new()),
                (key(BLOB, &[5; 32]), stale.encode()),
            ])
            .expect("put");
        let report = index.sync(&store, &keys).await.expect("sync");
        assert!(report.rebuilt);
        assert!(!index.contains(&Id([5; 32])).expect("contains"));
        assert!(index.contains(&Id([1; 32])).expect("contains"));
        assert!(!index.sync(&store, &keys).await.expect("sync").rebuilt);

        // A pack marked since the last sync: rebuilt, and its blobs are no longer usable.
        let now = chrono::Utc::now();
        crate::repo::marks::write(
            &store,
            &keys,
            vec![crate::format::marks::Mark::new(
                Id([9; 32]),
                now,
                chrono::Duration::hours(1),
            )],
        )
        .await
        .expect("mark");
        assert!(index.sync(&store, &keys).await.expect("sync").rebuilt);
        assert_eq!(index.usable(&Id([1; 32])).expect("usable"), None);
        assert!(index.contains(&Id([1; 32])).expect("contains"));
        assert!(!index.sync(&store, &keys).await.expect("sync").rebuilt);
    }
}
