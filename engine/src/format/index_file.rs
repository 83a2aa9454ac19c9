//! Index files (FORMAT.md, "Index files"): the magic `STWIDX01`, then per pack its id, the
//! number of its entries and the entries as in pack headers. The plaintext is sealed like
//! every object; `repo::index` reads them into the local cache.

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::{decode_entries, PackEntry, ENTRY_LEN};

/// Entries back to back, as in pack headers and index files.
pub fn encode_entries(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        e.encode(&mut out);
    }
    out
}

const MAGIC: &[u8; 8] = b"STWIDX01";
/// Index files name at most this many blobs (a single pack with more gets a file alone).
pub const INDEX_FILE_ENTRIES: usize = 50_000;

/// The plaintext of an index file: packs and their entries.
pub fn encode_index_file(packs: &[(Id, Vec<PackEntry>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (pack, entries) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&encode_entries(entries));
    }
    out
}

pub fn decode_index_file(b: &[u8], what: impl Fn() -> String) -> Result<PackList> {
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

/// What one index file names: packs and their entries.
pub type PackList = Vec<(Id, Vec<PackEntry>)>;
