//! A file's content: read inline when tiny, else chunked into data blobs; a registry blob
//! checked against its digest as it is read and recorded in the digest map.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use stowage_backends::source::EntryMeta;

use super::{add, display, Archiver, GZIP_MIN};
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::snapshot::MISMATCHES_NAMED;
use crate::format::tree::{Content, InlineBytes, Node, INLINE_MAX};
use crate::registry;
use crate::repo::index::DigestRecord;

impl Archiver {
    /// Reads the file's content into blobs; `None` when it is left out (vanished or
    /// unreadable: see [`Archiver::skip`]).
    pub(super) fn read_file(&self, rel: &Path, meta: &EntryMeta) -> Result<Option<Node>> {
        let mut node = Node::from_meta(meta).expect("files have nodes");
        let reader = match self.source.open(rel) {
            Ok(reader) => reader,
            Err(e) => return self.skip(rel, e).map(|()| None),
        };
        add(&self.counts.files, 1);
        let (content, size) = self.read_content(rel, reader, meta.size)?;
        if size != meta.size {
            self.progress.warn(&format!(
                "{}: changed while being read ({} bytes listed, {size} read)",
                display(rel),
                meta.size
            ));
        }
        add(&self.counts.files_read, 1);
        add(&self.counts.bytes_read, size);
        add(&self.counts.bytes, size);
        node.size = size;
        node.content = Some(content);
        Ok(Some(node))
    }

    /// Reads a file: inline when tiny, else chunked into data blobs.
    fn read_content(
        &self,
        rel: &Path,
        mut reader: Box<dyn Read + Send>,
        listed: u64,
    ) -> Result<(Content, u64)> {
        let io_err = |e| Error::io(display(rel), e);
        if listed <= INLINE_MAX {
            let mut bytes = Vec::new();
            (&mut reader)
                .take(INLINE_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            if bytes.len() as u64 <= INLINE_MAX {
                self.progress.advance(bytes.len() as u64);
                let size = bytes.len() as u64;
                // A tiny registry blob (an empty layer, a small config) is checked too.
                if let Some(expected) = registry::blob_digest(rel) {
                    if <[u8; 32]>::from(Sha256::digest(&bytes)) != expected {
                        self.warn_digest_mismatch(rel);
                    }
                }
                return Ok((Content::Inline(InlineBytes(bytes)), size));
            }
            // It grew since it was listed: store what was read and the rest.
            return self.store_content(rel, std::io::Cursor::new(bytes).chain(reader), listed);
        }
        self.store_content(rel, reader, listed)
    }

    /// Stores a file's content in data blobs: a registry blob in gzip is kept as gzip
    /// content when the backup asks for it. A registry blob is checked against its digest
    /// as it is read and recorded in the digest map.
    fn store_content(
        &self,
        rel: &Path,
        reader: impl Read + Send,
        listed: u64,
    ) -> Result<(Content, u64)> {
        let digest = registry::blob_digest(rel);
        let mut reader = Hashed {
            inner: reader,
            sha: digest.map(|_| Sha256::new()),
            count: 0,
        };
        let content = if digest.is_some() && self.gzip && listed >= GZIP_MIN {
            let content = self.gzip_content(rel, &mut reader, listed)?;
            self.progress.advance(reader.count);
            content
        } else {
            Content::Chunks(self.chunk(rel, &mut reader, listed, true)?)
        };
        let size = reader.count;
        if let (Some(expected), Some(sha)) = (digest, reader.sha) {
            let actual: [u8; 32] = sha.finalize().into();
            if actual == expected {
                let record = DigestRecord {
                    size,
                    content: content.clone(),
                };
                self.repo.index().set_digest(&expected, &record)?;
            } else {
                self.warn_digest_mismatch(rel);
            }
        }
        Ok((content, size))
    }

    /// Warns and counts: the snapshot records the path, and is partial.
    fn warn_digest_mismatch(&self, rel: &Path) {
        self.progress.warn(&format!(
            "{}: registry blob does not match its digest (stored as found)",
            display(rel)
        ));
        let counts = &self.counts;
        counts.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        let mut named = counts.mismatched.lock().unwrap_or_else(|e| e.into_inner());
        if named.len() < MISMATCHES_NAMED {
            named.push(display(rel));
        }
    }

    /// Chunks `reader` into data blobs; `progress` reports the bytes as they go.
    pub(super) fn chunk(
        &self,
        rel: &Path,
        reader: impl Read,
        size_hint: u64,
        progress: bool,
    ) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let chunked =
            self.repo
                .chunker()
                .chunk_with(&mut buffer, reader, size_hint, |chunk| -> Result<()> {
                    let (id, pack) = self.packer.add(BlobKind::Data, chunk)?;
                    self.packer.submit_blocking(pack)?;
                    ids.push(id);
                    if progress {
                        self.progress.advance(chunk.len() as u64);
                    }
                    Ok(())
                });
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buffer);
        chunked.map_err(|e| match e {
            Error::Io { cause, .. } => Error::io(display(rel), cause),
            e => e,
        })?;
        Ok(ids)
    }
}

/// A reader that hashes (when asked) and counts what passes through.
struct Hashed<R> {
    inner: R,
    sha: Option<Sha256>,
    count: u64,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(sha) = self.sha.as_mut() {
            sha.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}
