//! A gzip registry blob as gzip content: its plaintext, the recipe that re-creates it and the
//! bytes after what the recipe re-creates (FORMAT.md, "Gzip content").

use std::io::Read;
use std::path::Path;

use super::{add, display, Archiver};
use crate::error::{Error, Result};
use crate::format::tree::{Content, GzipContent};
use crate::gzip;

impl Archiver {
    /// A gzip file as gzip content (its plaintext, the recipe that re-creates it, and the
    /// bytes after what the recipe re-creates), or as plain chunks when it is not gzip or
    /// no part of it can be re-created exactly (counted as a fallback).
    pub(super) fn gzip_content(
        &self,
        rel: &Path,
        mut reader: impl Read + Send,
        listed: u64,
    ) -> Result<Content> {
        let io_err = |e| Error::io(display(rel), e);
        let mut head = Vec::new();
        (&mut reader)
            .take(gzip::HEADER_MAX as u64)
            .read_to_end(&mut head)
            .map_err(io_err)?;
        let Some(header) = gzip::header_len(&head) else {
            let ids = self.chunk(rel, std::io::Cursor::new(head).chain(reader), listed, false)?;
            return Ok(Content::Chunks(ids));
        };
        let mut body = std::io::Cursor::new(head.split_off(header)).chain(reader);
        let (plain, pieces, ending, unchecked) =
            gzip::split(&mut body, |checked| self.chunk(rel, checked, listed, false))
                .map_err(io_err)?;
        let plain = plain?;
        let rest = std::io::Cursor::new(unchecked).chain(body);
        if pieces.is_empty() {
            add(&self.counts.gzip_fallbacks, 1);
            let ids = self.chunk(rel, std::io::Cursor::new(head).chain(rest), listed, false)?;
            return Ok(Content::Chunks(ids));
        }
        let recreated: u64 = pieces.iter().map(|p| p.compressed).sum::<u64>() + head.len() as u64;
        match ending {
            gzip::Ending::Complete => add(&self.counts.gzip_layers, 1),
            gzip::Ending::Failed(why) => {
                add(&self.counts.gzip_partial, 1);
                self.progress.warn(&format!(
                    "{}: gzip content for the first {recreated} bytes; the rest is stored as it is ({why})",
                    display(rel)
                ));
            }
        }
        let tail = self.chunk(rel, rest, 0, false)?;
        let recipe = gzip::Recipe {
            header: head,
            pieces,
        }
        .encode();
        let size = recipe.len() as u64;
        let recipe = self.chunk(rel, std::io::Cursor::new(recipe), size, false)?;
        Ok(Content::Gzip(GzipContent {
            recipe,
            plain,
            tail,
        }))
    }
}
