//! Gzip content (FORMAT.md, "Gzip content"): a gzip file kept as its plaintext, chunked and
//! deduplicated like any other content, plus a recipe that re-creates the exact compressed
//! bytes from it. Registry layers are gzip streams named by the sha256 of their compressed
//! bytes; a layer rebuilt with three changed files shares nearly all of its plaintext with
//! the one before, and almost none of its compressed bytes.
//!
//! The deflate stream is split into pieces by `preflate-rs`, which finds how the encoder
//! chose its matches and Huffman trees and records, per piece, the corrections to its own
//! prediction. Each piece is re-created from its plaintext and corrections as soon as it is
//! split, exactly as a restore will do it, and compared with the original bytes: a stream
//! that does not come back exactly is never recorded as gzip content. Where that fails, the
//! file's remaining bytes are kept as they are (the "tail"); when no piece succeeded the
//! whole file is ordinary content.
//!
//! What lives where: this file holds the gzip header ([`header_len`]) and the guarded
//! preflate-rs calls both directions share; `recipe` the recipe and its stored bytes;
//! `split` splitting a stream while checking each piece (a backup's side); `rebuild`
//! re-creating the exact bytes (a restore's side).
//!
//! May use: `error` and preflate-rs; it knows nothing of repositories.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use preflate_rs::RecreateStreamProcessor;

mod rebuild;
mod recipe;
mod split;

pub use rebuild::Rebuilder;
pub use recipe::{Piece, Recipe};
pub use split::{split, Checked, Ending};

/// The encoder of the recipes written here. A recipe names its encoder; one this build
/// cannot replay is refused (FORMAT.md, "Gzip content").
pub const ENCODER: &str = "preflate-rs 0.7";

/// Gzip header bytes looked at, at most (a header with a longer name or comment is
/// stored as ordinary content).
pub const HEADER_MAX: usize = 4096;

/// The length of the gzip member header (RFC 1952) at the start of `bytes`, or `None` when
/// `bytes` does not start with a complete deflate-gzip header.
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let (&[0x1f, 0x8b, 8, flags], rest) = bytes.split_first_chunk::<4>()? else {
        return None;
    };
    if flags & 0xe0 != 0 || rest.len() < 6 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += bytes.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= bytes.len()).then_some(at)
}

/// Runs a preflate-rs call, turning a panic (the crate asserts on some inputs) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(format!("preflate-rs panicked: {why}"))
    })
}

/// The compressed bytes of the next piece of `recreate`'s stream.
fn recompress(
    recreate: &mut RecreateStreamProcessor,
    plain: &[u8],
    corrections: &[u8],
) -> Result<Vec<u8>, String> {
    guarded(|| {
        recreate
            .recompress(&mut Cursor::new(plain), corrections)
            .map(|(bytes, _)| bytes)
            .map_err(|e| reason(&e))
    })
}

/// A preflate-rs error in one line (its message goes on with where it was raised).
fn reason(e: &preflate_rs::PreflateError) -> String {
    let message = e.message();
    let first = message.lines().next().unwrap_or_default().trim();
    format!("{:?}: {first}", e.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Text-like data with repeats far apart, as in a tar of source files.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let words = [
            "layer",
            "registry",
            "digest",
            "manifest",
            "blob",
            "tar",
            "config",
            "static",
            "usr/lib",
            "libc.so.6",
            "\n",
            "{\"id\":",
            "0123456789",
            "  ",
        ];
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
            if x.is_multiple_of(11) {
                out.push((x >> 32) as u8);
            }
        }
        out.truncate(len);
        out
    }

    /// `plain` compressed by GNU gzip at `level`.
    fn gzip(plain: &[u8], level: u32) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .args([format!("-{level}"), "-n".into(), "-c".into()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("GNU gzip runs");
        let mut stdin = child.stdin.take().unwrap();
        let plain = plain.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&plain));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Splits `gz` as a backup does and rebuilds it as a restore does.
    fn round_trip(gz: &[u8]) -> (Vec<u8>, Ending, usize) {
        let h = header_len(gz).expect("gzip header");
        let mut input = &gz[h..];
        let (plain, pieces, ending, unchecked) = split(&mut input, |checked| {
            let mut plain = Vec::new();
            checked.read_to_end(&mut plain).map(|_| plain)
        })
        .unwrap();
        let plain = plain.unwrap();
        let rest = [&unchecked[..], input].concat();
        let recipe = Recipe {
            header: gz[..h].to_vec(),
            pieces,
        };
        let recipe = Recipe::decode(&recipe.encode(), "test").unwrap();
        assert_eq!(recipe.plain_len(), plain.len() as u64);
        let mut out = recipe.header.clone();
        let count = recipe.pieces.len();
        let mut rebuild = Rebuilder::new(recipe, "test".into());
        let mut write = |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        };
        for slice in plain.chunks(100_000) {
            rebuild.push(slice, &mut write).unwrap();
        }
        rebuild.finish(&mut write).unwrap();
        out.extend_from_slice(&rest);
        (out, ending, count)
    }

    #[test]
    fn gnu_gzip_level_6_streams_come_back_exactly() {
        let gz = gzip(&sample(20 << 20, 7), 6);
        let (out, ending, pieces) = round_trip(&gz);
        assert_eq!(ending, Ending::Complete);
        assert!(pieces >= 2, "{pieces} pieces");
        assert!(out == gz, "re-created bytes differ");
    }

    #[test]
    fn a_cut_stream_keeps_its_whole_pieces_and_the_rest_verbatim() {
        let gz = gzip(&sample(6 << 20, 9), 6);
        let cut = &gz[..gz.len() * 3 / 4];
        let (out, ending, pieces) = round_trip(cut);
        assert!(matches!(ending, Ending::Failed(_)), "{ending:?}");
        assert!(pieces >= 1);
        assert!(out == cut);
    }

    #[test]
    fn bytes_that_are_not_deflate_stay_verbatim() {
        let mut junk = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        junk.extend(std::iter::repeat_n(0xff, 100_000));
        let (out, ending, pieces) = round_trip(&junk);
        assert!(matches!(ending, Ending::Failed(_)));
        assert_eq!(pieces, 0);
        assert!(out == junk);
    }

    #[test]
    fn gzip_headers_with_optional_fields() {
        assert_eq!(
            header_len(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xaa]),
            Some(10)
        );
        let named = [&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3][..], b"a.tar\0", &[1]].concat();
        assert_eq!(header_len(&named), Some(16));
        let extra = [
            &[0x1f, 0x8b, 8, 4 | 2, 0, 0, 0, 0, 0, 3, 2, 0][..],
            b"xy",
            &[0, 0],
        ]
        .concat();
        assert_eq!(header_len(&extra), Some(16));
        assert_eq!(header_len(b"\x1f\x8b\x08\x08\0\0\0\0\0\x03no-end"), None);
        assert_eq!(header_len(b"PK\x03\x04"), None);
        assert_eq!(header_len(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]), None);
    }
}
