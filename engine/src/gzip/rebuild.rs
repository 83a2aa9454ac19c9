//! Re-creating a gzip file's exact compressed bytes from its recipe and plaintext (a
//! restore's side of gzip content).

use preflate_rs::RecreateStreamProcessor;

use super::{recompress, Piece, Recipe};
use crate::error::{Error, Result};

/// Re-creates a recipe's compressed bytes from its plaintext, fed in any slices.
pub struct Rebuilder {
    pieces: std::vec::IntoIter<Piece>,
    current: Option<Piece>,
    plain: Vec<u8>,
    recreate: RecreateStreamProcessor,
    what: String,
}

impl Rebuilder {
    /// A rebuilder of `recipe`'s pieces (its header is the caller's to write first).
    pub fn new(recipe: Recipe, what: String) -> Self {
        let mut pieces = recipe.pieces.into_iter();
        Rebuilder {
            current: pieces.next(),
            pieces,
            plain: Vec::new(),
            recreate: RecreateStreamProcessor::new(),
            what,
        }
    }

    /// Takes plaintext; hands each piece's compressed bytes to `out` once its plaintext is
    /// complete.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let Some(piece) = &self.current else {
                return Err(Error::corrupt(
                    &self.what,
                    "more plaintext than the gzip recipe re-creates",
                ));
            };
            let want = (piece.plain as usize).saturating_sub(self.plain.len());
            let n = want.min(bytes.len());
            self.plain.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.flush(out)?;
        }
        Ok(())
    }

    /// Re-creates every piece whose plaintext is complete.
    fn flush(&mut self, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while let Some(piece) = &self.current {
            if self.plain.len() as u64 != piece.plain {
                return Ok(());
            }
            let bytes = recompress(&mut self.recreate, &self.plain, &piece.corrections)
                .map_err(|why| Error::corrupt(&self.what, format!("gzip re-creation: {why}")))?;
            if bytes.len() as u64 != piece.compressed {
                return Err(Error::corrupt(
                    &self.what,
                    format!(
                        "gzip re-creation made {} bytes where the recipe says {}",
                        bytes.len(),
                        piece.compressed
                    ),
                ));
            }
            out(&bytes)?;
            self.plain.clear();
            self.current = self.pieces.next();
        }
        Ok(())
    }

    /// Checks that every piece was re-created (pieces without plaintext are done here).
    pub fn finish(mut self, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.flush(out)?;
        match self.current {
            None => Ok(()),
            Some(_) => Err(Error::corrupt(
                &self.what,
                "less plaintext than the gzip recipe re-creates",
            )),
        }
    }
}
