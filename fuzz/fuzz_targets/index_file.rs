//! Index files (FORMAT.md, "Index files"): the plaintext after authentication, as
//! `repo::index` decodes it. What decodes encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::index_file::{decode_index_file, encode_index_file};
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = decode_index_file(data, String::new) {
        assert_eq!(encode_index_file(&packs), data);
    }
});
