//! zstd compression that does not pay for data that will not compress (FORMAT.md,
//! "Compression"). Registry layers are gzip streams: compressing them again costs a full
//! zstd pass for well under 1% gain, so a cheap entropy estimate on a sample decides first.

use std::borrow::Cow;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Shannon entropy, in bits per byte, of up to 64 KiB sampled evenly across `data`.
fn sampled_entropy(data: &[u8]) -> f64 {
    const WINDOW: usize = 4096;
    const WINDOWS: usize = 16;
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    let step = (data.len() / WINDOWS).max(WINDOW);
    let mut start = 0;
    while start < data.len() {
        for &b in &data[start..(start + WINDOW).min(data.len())] {
            counts[b as usize] += 1;
            total += 1;
        }
        start += step;
    }
    let total = f64::from(total);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum()
}

// zstd contexts cost more to create than a small tree takes to (de)compress: one per thread,
// reused.
thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `data` when that pays; returns the encoding and the bytes to store (borrowed
/// when stored raw).
pub fn compress(data: &[u8], level: i32) -> (Compression, Cow<'_, [u8]>) {
    // Entropy above ~7.9 bits/byte: compressed or encrypted input; zstd would gain nothing.
    if data.len() < 64 || sampled_entropy(data) > 7.9 {
        return (Compression::None, Cow::Borrowed(data));
    }
    let packed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let fresh = match cell.as_ref() {
            Some((l, _)) => *l != level,
            None => true,
        };
        if fresh {
            *cell = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = cell.as_mut().expect("just set");
        compressor.compress(data)
    });
    match packed {
        Ok(packed) if packed.len() + packed.len() / 32 < data.len() => {
            (Compression::Zstd, Cow::Owned(packed))
        }
        _ => (Compression::None, Cow::Borrowed(data)),
    }
}

/// Reverses [`compress`]; `raw_len` is the expected plaintext length.
pub fn decompress(
    compression: Compression,
    data: Vec<u8>,
    raw_len: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>> {
    let out = match compression {
        Compression::None => data,
        Compression::Zstd => DECOMPRESSOR
            .with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = Some(zstd::bulk::Decompressor::new()?);
                }
                cell.as_mut().expect("just set").decompress(&data, raw_len)
            })
            .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?,
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(
            "blob",
            format!("length {} where the index says {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_random_is_not() {
        let text = b"registry link sha256 layer manifest ".repeat(3000);
        let (c, packed) = compress(&text, 3);
        assert_eq!(c, Compression::Zstd);
        assert!(packed.len() < text.len() / 10);
        let back = decompress(c, packed.into_owned(), text.len(), String::new).expect("decompress");
        assert_eq!(back, text);

        let noise: Vec<u8> = (0..100_000).map(|_| rand::random::<u8>()).collect();
        let (c, stored) = compress(&noise, 3);
        assert_eq!(c, Compression::None);
        assert_eq!(&stored[..], &noise[..]);
    }

    #[test]
    fn wrong_length_is_corruption() {
        let (c, packed) = compress(&[7u8; 4096], 3);
        assert!(decompress(c, packed.into_owned(), 4000, String::new).is_err());
    }
}
