//! Packs (FORMAT.md, "Packs"): many sealed blobs, then a sealed header describing them, then
//! the header's length as a little-endian u32. A pack's id is the BLAKE3 of its bytes.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::compress::Compression;
use crate::format::crypto::{Keys, SEAL_OVERHEAD};
use crate::format::id::Id;
use stowage_backends::{Store, StoreError, Upload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack: the record of pack headers and index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub compression: Compression,
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

pub const ENTRY_LEN: usize = 46;
/// The header's length at the end of a pack (u32 LE).
const HEADER_LENGTH_LEN: u64 = 4;

impl PackEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != ENTRY_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(PackEntry {
            kind: BlobKind::from_u8(b[0])?,
            compression: Compression::from_u8(b[1])?,
            id: Id::from_slice(&b[2..34])?,
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        })
    }

    pub fn range(&self) -> std::ops::Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.length)
    }
}

/// Decodes a sequence of entries.
pub fn decode_entries(b: &[u8], what: impl Fn() -> String) -> Result<Vec<PackEntry>> {
    if !b.len().is_multiple_of(ENTRY_LEN) {
        return Err(Error::corrupt(what(), "entry table has a partial entry"));
    }
    b.chunks(ENTRY_LEN)
        .map(|e| PackEntry::decode(e).ok_or_else(|| Error::corrupt(what(), "bad entry")))
        .collect()
}

/// Writes sealed blobs into one pack as they come: straight into the store's upload (a file,
/// for a directory store), hashing as it goes, so a pack is never held whole in memory.
#[derive(Default)]
pub struct PackBuilder {
    upload: Option<Box<dyn Upload>>,
    /// Why a write failed (see [`PackBuilder::write`]), for the writers that come later.
    broken: Option<String>,
    hasher: blake3::Hasher,
    len: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack: written, not yet stored under its key `data/<first 2 hex>/<id>`.
pub struct Pack {
    pub id: Id,
    /// Its length in bytes.
    pub len: u64,
    pub entries: Vec<PackEntry>,
    upload: Box<dyn Upload>,
}

impl Pack {
    pub fn key(id: &Id) -> String {
        let hex = id.to_hex();
        format!("data/{}/{}", &hex[..2], hex)
    }

    /// The packs in `store`, with their sizes in bytes.
    pub async fn list_stored(store: &dyn Store) -> Result<HashMap<Id, u64>> {
        Ok(store
            .list("data/")
            .await?
            .into_iter()
            .filter_map(|m| Some((m.key.rsplit('/').next()?.parse().ok()?, m.size)))
            .collect())
    }

    /// The size of a pack holding `entries` (all of them, in the order written): the sealed
    /// blobs, the sealed header and its length.
    pub fn len_for(entries: &[PackEntry]) -> u64 {
        let blobs = entries
            .iter()
            .map(|e| u64::from(e.offset) + u64::from(e.length))
            .max()
            .unwrap_or(0);
        blobs + (entries.len() * ENTRY_LEN + SEAL_OVERHEAD) as u64 + HEADER_LENGTH_LEN
    }

    /// Stores the pack under its key in `store` (the store its upload came from).
    pub async fn store(self, store: &dyn Store) -> Result<()> {
        Ok(self.upload.finish(store, &Pack::key(&self.id)).await?)
    }
}

impl PackBuilder {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the next [`add`](Self::add) calls its `start`: no upload was started yet
    /// (and no write failed). A caller whose `start` must wait (a store's async
    /// `start_upload`) starts the upload before calling `add`.
    pub fn needs_upload(&self) -> bool {
        self.upload.is_none() && self.broken.is_none()
    }

    /// Appends bytes to the pack. After a failed write the pack's content is unknown (part
    /// of the bytes may have landed), so the builder refuses everything from then on: no
    /// later blob can be recorded at a wrong offset, and the pack is never finished.
    fn write(
        &mut self,
        bytes: &[u8],
        start: impl FnOnce() -> Result<Box<dyn Upload>>,
    ) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(Error::io(
                "the pack being written",
                std::io::Error::other(format!(
                    "an earlier write to it failed ({why}); the pack is abandoned"
                )),
            ));
        }
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self.upload.insert(start()?),
        };
        if let Err(cause) = upload.write(bytes) {
            self.broken = Some(cause.to_string());
            self.upload = None; // discarded: its temporary file goes
            return Err(StoreError::Io {
                store: "the repository".into(),
                op: "put",
                key: "a pack being written".into(),
                cause,
            }
            .into());
        }
        self.hasher.update(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// Appends a sealed blob; the first one starts the pack's upload with `start`.
    pub fn add(
        &mut self,
        start: impl FnOnce() -> Result<Box<dyn Upload>>,
        kind: BlobKind,
        id: Id,
        compression: Compression,
        raw_length: usize,
        sealed: &[u8],
    ) -> Result<()> {
        let offset = self.len as u32;
        self.write(sealed, start)?;
        self.entries.push(PackEntry {
            kind,
            compression,
            id,
            offset,
            length: sealed.len() as u32,
            raw_length: raw_length as u32,
        });
        Ok(())
    }

    /// Writes the sealed header and returns the finished pack, or `None` when it is empty.
    pub fn finish(mut self, keys: &Keys) -> Result<Option<Pack>> {
        if self.entries.is_empty() && self.broken.is_none() {
            return Ok(None);
        }
        let mut header = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            e.encode(&mut header);
        }
        let sealed = keys.seal(&header);
        let no_start = || Err(Error::bug("pack upload not started"));
        self.write(&sealed, no_start)?;
        self.write(&(sealed.len() as u32).to_le_bytes(), no_start)?;
        let upload = self
            .upload
            .take()
            .expect("a pack with entries has an upload");
        Ok(Some(Pack {
            id: Id(*self.hasher.finalize().as_bytes()),
            len: self.len as u64,
            entries: std::mem::take(&mut self.entries),
            upload,
        }))
    }
}

/// The header of a whole pack's bytes, after checking that they hash to the pack's id.
pub fn verified_header(keys: &Keys, pack_id: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    if Id::hash_of(bytes) != *pack_id {
        return Err(Error::corrupt(
            format!("pack {pack_id}"),
            "content does not match the pack id (damaged)",
        ));
    }
    read_header(keys, pack_id, bytes)
}

/// Reads the header of a whole pack's bytes.
pub fn read_header(keys: &Keys, pack_id: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    read_header_from_tail(keys, pack_id, bytes.len() as u64, bytes)
}

/// How many bytes from a pack's end hold its header and the header's length, from the
/// pack's last bytes (at least 4): `repair index` reads just those of each pack.
pub fn header_tail_len(pack_id: &Id, pack_len: u64, tail: &[u8]) -> Result<u64> {
    let what = || format!("pack {pack_id} header");
    let Some(len) = tail.last_chunk::<4>() else {
        return Err(Error::corrupt(what(), "pack shorter than its length field"));
    };
    let needed = u64::from(u32::from_le_bytes(*len)) + HEADER_LENGTH_LEN;
    if needed > pack_len {
        return Err(Error::corrupt(what(), "header length exceeds the pack"));
    }
    Ok(needed)
}

/// Reads the header of a pack of `pack_len` bytes from its last bytes `tail` (the whole
/// pack, or at least [`header_tail_len`] of its end).
pub fn read_header_from_tail(
    keys: &Keys,
    pack_id: &Id,
    pack_len: u64,
    tail: &[u8],
) -> Result<Vec<PackEntry>> {
    let what = || format!("pack {pack_id} header");
    let needed = header_tail_len(pack_id, pack_len, tail)?;
    if needed > tail.len() as u64 || tail.len() as u64 > pack_len {
        return Err(Error::corrupt(
            what(),
            "the bytes read do not hold the header",
        ));
    }
    let body = &tail[..tail.len() - HEADER_LENGTH_LEN as usize];
    let header_len = (needed - HEADER_LENGTH_LEN) as usize;
    let header = keys.open(&body[body.len() - header_len..], what)?;
    let entries = decode_entries(&header, what)?;
    let data_end = pack_len - needed;
    if entries.iter().any(|e| e.range().end > data_end) {
        return Err(Error::corrupt(what(), "an entry points past the blobs"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pack_round_trip() {
        let keys = Keys::random();
        let store = stowage_backends::memory::MemoryStore::new();
        let mut b = PackBuilder::default();
        let mut upload = Some(store.start_upload("data", 0).await.expect("start"));
        let blobs: [&[u8]; 2] = [b"first blob", b"second"];
        for blob in blobs {
            b.add(
                || Ok(upload.take().expect("started once")),
                BlobKind::Data,
                keys.blob_id(blob),
                Compression::None,
                blob.len(),
                &keys.seal(blob),
            )
            .expect("add");
        }
        let pack = b.finish(&keys).expect("finish").expect("not empty");
        let (id, entries) = (pack.id, pack.entries.clone());
        pack.store(&store).await.expect("store");
        let bytes = store.get(&Pack::key(&id)).await.expect("stored");
        assert_eq!(id, Id::hash_of(&bytes));
        assert_eq!(
            Pack::len_for(&entries),
            bytes.len() as u64,
            "check's size rule"
        );
        let listed = Pack::list_stored(&store).await.expect("list");
        assert_eq!(listed.get(&id), Some(&(bytes.len() as u64)));
        assert_eq!(read_header(&keys, &id, &bytes).expect("header"), entries);
        for (e, blob) in entries.iter().zip(blobs) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(keys.open(sealed, String::new).expect("open"), blob);
        }
        let mut damaged = bytes.to_vec();
        let n = damaged.len();
        damaged[n - 10] ^= 1;
        assert!(read_header(&keys, &id, &damaged).is_err());
        assert!(read_header(&keys, &id, &bytes[..3]).is_err());
        assert!(PackBuilder::default()
            .finish(&keys)
            .expect("finish")
            .is_none());
    }

    /// An upload whose second write fails (disk full).
    struct FailingUpload(usize);

    #[async_trait::async_trait]
    impl Upload for FailingUpload {
        fn write(&mut self, _data: &[u8]) -> std::io::Result<()> {
            self.0 += 1;
            match self.0 {
                2 => Err(std::io::Error::from_raw_os_error(28)),
                _ => Ok(()),
            }
        }

        async fn finish(
            self: Box<Self>,
            _store: &dyn Store,
            _key: &str,
        ) -> stowage_backends::StoreResult<()> {
            panic!("a broken pack must never be finished")
        }
    }

    #[test]
    fn a_failed_write_abandons_the_pack() {
        let keys = Keys::random();
        let mut b = PackBuilder::default();
        let add = |b: &mut PackBuilder, blob: &[u8]| {
            b.add(
                || Ok(Box::new(FailingUpload(0))),
                BlobKind::Data,
                keys.blob_id(blob),
                Compression::None,
                blob.len(),
                &keys.seal(blob),
            )
        };
        add(&mut b, b"first").expect("first write lands");
        let err = add(&mut b, b"second").expect_err("disk full");
        assert!(err.to_string().contains("a pack being written"), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        // The disk has room again: still refused, naming the first failure, and the pack
        // is never finished.
        let later = add(&mut b, b"third").expect_err("abandoned");
        assert!(
            later.to_string().contains("No space left on device"),
            "{later}"
        );
        assert!(b.finish(&keys).is_err());
    }
}
