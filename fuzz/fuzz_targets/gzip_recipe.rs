//! Gzip recipes (FORMAT.md, "Gzip content"): a recipe's bytes as the reader decodes them
//! (what decodes encodes to exactly the same bytes), and the gzip member header of a
//! registry blob as a backup finds it (`header_len`). Mode 0: a recipe; mode 1: the start
//! of a gzip file. Replaying a decoded recipe is `gzip_rebuild`.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::gzip::{header_len, Recipe};
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 2 {
        0 => {
            if let Ok(recipe) = Recipe::decode(rest, "fuzz") {
                assert_eq!(recipe.encode(), rest);
            }
        }
        _ => {
            if let Some(n) = header_len(rest) {
                assert!((10..=rest.len()).contains(&n));
            }
        }
    }
});
