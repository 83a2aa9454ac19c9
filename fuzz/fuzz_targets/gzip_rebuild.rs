//! Gzip recipes replayed (FORMAT.md, "Gzip content"): a decoded recipe and plaintext given
//! to `Rebuilder` as a restore does (preflate-rs re-creates each piece from its plaintext
//! and corrections). A rebuild that finishes made exactly the bytes the recipe names.
//! Input: u16 recipe length (LE), the recipe, then the plaintext.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::gzip::{Rebuilder, Recipe};
use stowage_fuzz as _;

/// preflate-rs asserts on some inputs; the engine turns its panics into errors
/// (`gzip::guarded`, catch_unwind). libfuzzer-sys's panic hook aborts on every panic, so
/// here the hook lets those of preflate-rs unwind to that catch_unwind, and aborts on any
/// other.
fn preflate_panics_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_preflate = info
                .location()
                .is_some_and(|l| l.file().contains("preflate"));
            if !in_preflate {
                fuzzer_hook(info);
                std::process::abort();
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    preflate_panics_unwind();
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (recipe, plain) = rest.split_at(len);
    let Ok(recipe) = Recipe::decode(recipe, "fuzz") else {
        return;
    };
    // What the pieces say they re-create (`Recipe::compressed_len` less the header, which
    // the caller writes; summed without overflowing).
    let expected = recipe
        .pieces
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.compressed));
    let mut rebuilt = 0u64;
    let mut out = |bytes: &[u8]| {
        rebuilt += bytes.len() as u64;
        Ok(())
    };
    let mut rebuild = Rebuilder::new(recipe, "fuzz".into());
    // In two slices, as blobs come.
    let (a, b) = plain.split_at(plain.len() / 2);
    let done = rebuild
        .push(a, &mut out)
        .and_then(|()| rebuild.push(b, &mut out))
        .and_then(|()| rebuild.finish(&mut out));
    if done.is_ok() {
        assert_eq!(
            Some(rebuilt),
            expected,
            "a finished rebuild made every piece's bytes"
        );
    }
});
