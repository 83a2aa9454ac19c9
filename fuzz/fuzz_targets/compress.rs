//! Compressed blobs (FORMAT.md, "Compression"): a blob's plaintext after authentication
//! decompressed as `Repository::decode_blob` does, with the encoding byte and raw length of
//! its index entry. The raw length is bounded here to 1 MiB (the decoder allocates it up
//! front; FUZZING.md). Mode 1: `compress` then `decompress` gives the input back.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::compress::{compress, decompress, Compression};
use stowage_fuzz as _;

/// The largest raw length tried (20 bits).
const RAW_MAX: u32 = (1 << 20) - 1;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let [mode, l0, l1, l2] = *head;
    if mode & 0x80 == 0 {
        let Some(compression) = Compression::from_u8(mode & 0x7f) else {
            return;
        };
        let raw_len = (u32::from_le_bytes([l0, l1, l2, 0]) & RAW_MAX) as usize;
        if let Ok(plain) = decompress(compression, rest.to_vec(), raw_len, String::new) {
            assert_eq!(plain.len(), raw_len);
            if compression == Compression::None {
                assert_eq!(plain, rest);
            }
        }
    } else {
        let level = i32::from(l0 % 20) + 1;
        let (compression, stored) = compress(rest, level);
        let back = decompress(compression, stored.into_owned(), rest.len(), String::new)
            .expect("what compress wrote decompresses");
        assert_eq!(back, rest);
    }
});
