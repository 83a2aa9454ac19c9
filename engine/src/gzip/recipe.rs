//! The recipe of a gzip file (FORMAT.md, "Gzip content"): its header and the pieces of its
//! deflate stream, and the bytes they are stored as.

use super::ENCODER;
use crate::error::{Error, Result};

/// One piece of a deflate stream: how much plaintext it holds, how many compressed bytes it
/// re-creates, and the corrections that steer the re-creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub plain: u64,
    pub compressed: u64,
    pub corrections: Vec<u8>,
}

/// What re-creates a gzip file's compressed bytes: its header verbatim and the pieces of its
/// deflate stream. The plaintext and the tail are kept as content blobs beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub header: Vec<u8>,
    pub pieces: Vec<Piece>,
}

const MAGIC: &[u8; 8] = b"STWGZIP1";

impl Recipe {
    /// Bytes of the plaintext the pieces re-create.
    pub fn plain_len(&self) -> u64 {
        self.pieces.iter().map(|p| p.plain).sum()
    }

    /// Bytes the header and the pieces re-create.
    pub fn compressed_len(&self) -> u64 {
        self.header.len() as u64 + self.pieces.iter().map(|p| p.compressed).sum::<u64>()
    }

    /// The recipe as stored: magic, encoder, header, pieces (lengths little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let corrections: usize = self.pieces.iter().map(|p| p.corrections.len() + 20).sum();
        let mut out = Vec::with_capacity(64 + self.header.len() + corrections);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, ENCODER.as_bytes());
        put_bytes(&mut out, &self.header);
        out.extend_from_slice(&(self.pieces.len() as u32).to_le_bytes());
        for piece in &self.pieces {
            out.extend_from_slice(&piece.plain.to_le_bytes());
            out.extend_from_slice(&piece.compressed.to_le_bytes());
            put_bytes(&mut out, &piece.corrections);
        }
        out
    }

    /// Parses a stored recipe; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Recipe> {
        let bad = |detail: &str| Error::corrupt(what, format!("gzip recipe: {detail}"));
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("not a recipe"));
        }
        let encoder = r.bytes().ok_or_else(|| bad("cut short"))?;
        if encoder != ENCODER.as_bytes() {
            return Err(Error::Usage(format!(
                "{what}: gzip recipe made by {:?}, which this build cannot replay (it has {ENCODER})",
                String::from_utf8_lossy(encoder)
            )));
        }
        let header = r.bytes().ok_or_else(|| bad("cut short"))?.to_vec();
        let count = r.u32().ok_or_else(|| bad("cut short"))?;
        let mut pieces = Vec::new();
        for _ in 0..count {
            let piece = (|| {
                Some(Piece {
                    plain: r.u64()?,
                    compressed: r.u64()?,
                    corrections: r.bytes()?.to_vec(),
                })
            })()
            .ok_or_else(|| bad("cut short"))?;
            pieces.push(piece);
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Recipe { header, pieces })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_recipes_are_refused() {
        let recipe = Recipe {
            header: vec![1, 2, 3],
            pieces: vec![Piece {
                plain: 10,
                compressed: 5,
                corrections: vec![9; 4],
            }],
        };
        let bytes = recipe.encode();
        assert_eq!(Recipe::decode(&bytes, "r").unwrap(), recipe);
        assert!(matches!(
            Recipe::decode(&bytes[..bytes.len() - 1], "r"),
            Err(Error::Corrupt { .. })
        ));
        let mut other = bytes.clone();
        other[12] = b'X'; // the encoder's name
        assert!(
            matches!(Recipe::decode(&other, "r"), Err(Error::Usage(m)) if m.contains("cannot replay"))
        );
    }
}
