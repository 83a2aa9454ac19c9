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
//! | `d` + sha256 digest | a registry blob's size and content blob ids |
//!
//! Deleting the cache loses nothing: [`Index::sync`] rebuilds it from `index/`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use stowage_backends::{KvStore, Store};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{decode_entries, PackEntry, ENTRY_LEN};

const MAGIC: &[u8; 8] = b"STWIDX01";
const BLOB: u8 = b'b';
const INDEX_FILE: u8 = b'x';
const DIGEST: u8 = b'd';

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub entry: PackEntry,
}

impl Location {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + ENTRY_LEN);
        out.extend_from_slice(&self.pack.0);
        self.entry.encode(&mut out);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 32 + ENTRY_LEN {
            return None;
        }
        Some(Location {
            pack: Id::from_slice(&b[..32])?,
            entry: PackEntry::decode(&b[32..])?,
        })
    }
}

/// The plaintext of an index file: packs and their entries.
pub fn encode_index_file(packs: &[(Id, Vec<PackEntry>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (pack, entries) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            e.encode(&mut out);
        }
    }
    out
}

pub fn decode_index_file(b: &[u8], what: impl Fn() -> String) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    let mut rest = b
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::corrupt(what(), "not an index file (bad magic)"))?;
    let mut packs = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 36 {
            return Err(Error::corrupt(what(), "truncated pack record"));
        }
        let pack = Id::from_slice(&rest[..32]).expect("32 bytes");
        let count = u32::from_le_bytes(rest[32..36].try_into().expect("4 bytes")) as usize;
        let table_len = count
            .checked_mul(ENTRY_LEN)
            .filter(|&n| n <= rest.len() - 36)
            .ok_or_else(|| Error::corrupt(what(), "truncated entry table"))?;
        let entries = decode_entries(&rest[36..36 + table_len], &what)?;
        packs.push((pack, entries));
        rest = &rest[36 + table_len..];
    }
    Ok(packs)
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
    pub content: Vec<Id>,
}

/// Lookups of what the repository holds, through the local cache.
#[derive(Clone)]
pub struct Index {
    kv: Arc<dyn KvStore>,
}

/// What a sync did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    pub index_files_read: usize,
    pub rebuilt: bool,
}

impl Index {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Index { kv }
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

    /// Records the packs of one index file, and the file itself, in the cache.
    pub fn add(&self, index_file: Id, packs: &[(Id, Vec<PackEntry>)]) -> Result<()> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = packs
            .iter()
            .flat_map(|(pack, entries)| {
                entries.iter().map(move |entry| {
                    let loc = Location {
                        pack: *pack,
                        entry: *entry,
                    };
                    (key(BLOB, &entry.id.0), loc.encode())
                })
            })
            .collect();
        pairs.push((key(INDEX_FILE, &index_file.0), Vec::new()));
        self.kv.put_batch(&pairs)?;
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

    fn clear(&self) -> Result<()> {
        for prefix in [INDEX_FILE, BLOB] {
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

    /// Brings the cache up to date with the repository's `index/` objects.
    pub async fn sync(&self, store: &dyn Store, keys: &Keys) -> Result<SyncReport> {
        let listed: HashSet<Id> = store
            .list("index/")
            .await?
            .iter()
            .filter_map(|m| m.key.strip_prefix("index/")?.parse().ok())
            .collect();
        let mut known = self.known_index_files()?;
        let mut report = SyncReport::default();
        if !known.is_subset(&listed) {
            // An index file went away (rewritten by prune): start over rather than keep
            // locations of packs that may be gone.
            self.clear()?;
            known.clear();
            report.rebuilt = true;
        }
        let missing: Vec<Id> = listed.difference(&known).copied().collect();
        report.index_files_read = missing.len();
        futures::stream::iter(missing)
            .map(|id| async move {
                let sealed = store.get(&format!("index/{id}")).await?;
                Ok::<(Id, Bytes), Error>((id, sealed))
            })
            .buffer_unordered(8)
            .try_for_each(|(id, sealed)| async move {
                let what = || format!("index file {id}");
                let plain = keys.open(&sealed, what)?;
                let packs = decode_index_file(&plain, what)?;
                self.add(id, &packs)
            })
            .await?;
        Ok(report)
    }

    pub fn digest(&self, sha256: &[u8; 32]) -> Result<Option<DigestRecord>> {
        let Some(v) = self.kv.get(&key(DIGEST, sha256))? else {
            return Ok(None);
        };
        let bad = || Error::corrupt("local cache", "bad digest record");
        if v.len() < 8 || (v.len() - 8) % 32 != 0 {
            return Err(bad());
        }
        let size = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
        let content = v[8..]
            .chunks(32)
            .map(|c| Id::from_slice(c).ok_or_else(bad))
            .collect::<Result<_>>()?;
        Ok(Some(DigestRecord { size, content }))
    }

    pub fn set_digest(&self, sha256: &[u8; 32], record: &DigestRecord) -> Result<()> {
        let mut v = record.size.to_le_bytes().to_vec();
        for id in &record.content {
            v.extend_from_slice(&id.0);
        }
        self.kv.put_batch(&[(key(DIGEST, sha256), v)])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::pack::BlobKind;
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
}
