//! Pack headers (FORMAT.md, "Packs"): the entry table after authentication
//! (`decode_entries`), a whole pack whose header is the input sealed (`read_header`, and
//! `repair index`'s tail-only read), and raw bytes as a pack (they fail authentication).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::crypto::Keys;
use stowage_engine::format::id::Id;
use stowage_engine::format::index_file::encode_entries;
use stowage_engine::format::pack::{
    decode_entries, header_tail_len, read_header, read_header_from_tail,
};
use stowage_fuzz as _;

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(Keys::random)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let id = Id([7; 32]);
    match mode % 3 {
        // The plaintext header: it decodes to entries that encode to exactly its bytes.
        0 => {
            if let Ok(entries) = decode_entries(rest, String::new) {
                assert_eq!(encode_entries(&entries), rest);
            }
        }
        // A pack of `blobs` bytes of blob data, the input sealed as its header, and the
        // header's length (plus `skew`, so wrong lengths are tried too).
        1 => {
            let Some((head, header)) = rest.split_first_chunk::<3>() else {
                return;
            };
            let blobs = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let skew = i64::from(head[2] as i8);
            let mut pack = vec![0xa5; blobs];
            let sealed = keys().seal(header);
            pack.extend_from_slice(&sealed);
            let len = (sealed.len() as i64 + if skew.abs() < 8 { 0 } else { skew }) as u32;
            pack.extend_from_slice(&len.to_le_bytes());
            let whole = read_header(keys(), &id, &pack);
            if let Ok(entries) = &whole {
                assert_eq!(encode_entries(entries), header);
                assert!(entries.iter().all(|e| e.range().end <= blobs as u64));
            }
            // `repair index`: the last 4 bytes give the tail to read, the tail the header.
            let pack_len = pack.len() as u64;
            if let Ok(n) = header_tail_len(&id, pack_len, &pack[pack.len() - 4..]) {
                let tail = &pack[pack.len() - n as usize..];
                let from_tail = read_header_from_tail(keys(), &id, pack_len, tail);
                assert_eq!(from_tail.ok(), whole.ok());
            } else {
                assert!(whole.is_err());
            }
        }
        // Raw bytes: a whole pack, or a tail of a pack of the length the first 8 bytes say.
        _ => {
            assert!(read_header(keys(), &id, rest).is_err());
            if let Some((len, tail)) = rest.split_first_chunk::<8>() {
                let pack_len = u64::from_le_bytes(*len);
                let _ = header_tail_len(&id, pack_len, tail);
                assert!(read_header_from_tail(keys(), &id, pack_len, tail).is_err());
            }
        }
    }
});
