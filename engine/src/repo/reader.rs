//! The one verified reader: a file node's content, blob by blob, checked against every id,
//! its size and (for registry blobs) its sha256, with gzip content re-created on the way
//! (FORMAT.md, "Restore verification"). Restore, dump, tar streams, `optimize` and partial
//! restores' manifest reads all go through [`read_content`].

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::Pack;
use crate::format::tree::{Content, Node, NodeKind};
use crate::repo::index::Location;
use crate::repo::Repository;
use crate::runtime;

/// One read from a pack spans at most this much (or one blob, when that is larger).
const MAX_READ: u64 = 8 << 20;

/// Splits `blobs` into runs that each are one contiguous range of one pack, up to
/// `max_read` bytes.
fn adjacent_runs(blobs: &[(Id, Location)], max_read: u64) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, (_, loc)) in blobs.iter().enumerate() {
        let extends = runs.last().is_some_and(|run| {
            let (start, prev) = (&blobs[run.start].1, &blobs[i - 1].1);
            prev.pack == loc.pack
                && prev.entry.range().end == loc.entry.range().start
                && loc.entry.range().end - start.entry.range().start <= max_read
        });
        match runs.last_mut() {
            Some(run) if extends => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// Gzip re-creations at once. Each is CPU-bound and holds a piece of plaintext (~16 MiB)
/// and preflate-rs's state: more of them than there are cores adds memory and no speed.
static REBUILDS: std::sync::LazyLock<Semaphore> = std::sync::LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
});

/// Reads the data blobs `ids` in order and hands each one's plaintext to `take`, verified
/// against its id. Blobs stored back to back in one pack come in one read: a layer's chunks
/// were packed in order, so a whole file is a few requests, not one per chunk.
fn read_blobs(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    ids: &[Id],
    take: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut blobs = Vec::with_capacity(ids.len());
    let mut plain = Vec::new();
    for id in ids {
        let loc = repo.index().lookup(id)?.ok_or(Error::MissingBlob(*id))?;
        blobs.push((*id, loc));
    }
    for run in adjacent_runs(&blobs, MAX_READ) {
        let run = &blobs[run];
        let (first, last) = (&run[0].1, &run[run.len() - 1].1);
        let range = first.entry.range().start..last.entry.range().end;
        let bytes = runtime::wait(
            rt,
            repo.store()
                .get_range(&Pack::key(&first.pack), range.clone()),
        )?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corrupt(
                format!("pack {}", first.pack),
                "cut short (pack truncated)",
            ));
        }
        for (id, loc) in run {
            let at = (loc.entry.range().start - range.start) as usize;
            let sealed = &bytes[at..at + loc.entry.length as usize];
            repo.decode_blob_into(id, loc, sealed, &mut plain)?;
            take(&plain)?;
        }
    }
    Ok(())
}

/// What [`read_content`] read and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentRead {
    pub bytes: u64,
    /// A `digest` was given and the content's sha256 matched it.
    pub digest_verified: bool,
}

/// Reads a file node's content and hands it to `write` blob by blob, verifying it as
/// FORMAT.md ("Restore verification") asks: every blob against its id (blobs stored back to
/// back in one pack come in one ranged read), the total against the node's size (`write`
/// never gets more than that), and, when `digest` is given (a registry blob: see
/// [`crate::registry::blob_digest`]), the whole content against that sha256.
///
/// `write` sees the bytes before the size and digest checks are done, so a caller must not
/// make them final until this returns `Ok`: a directory restore keeps the file under its
/// temporary name, a tar stream holds back the entry's last bytes. Blocking: reads through
/// `rt`, so call it off the async runtime.
pub(crate) fn read_content(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    rel: &Path,
    node: &Node,
    digest: Option<[u8; 32]>,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ContentRead> {
    let mut sha = digest.map(|_| Sha256::new());
    let mut written = 0u64;
    let mut take = |bytes: &[u8]| -> Result<()> {
        if written + bytes.len() as u64 > node.size {
            return Err(Error::corrupt(
                rel.display().to_string(),
                format!(
                    "content holds more than the {} bytes the snapshot says",
                    node.size
                ),
            ));
        }
        if let Some(sha) = sha.as_mut() {
            sha.update(bytes);
        }
        write(bytes)?;
        written += bytes.len() as u64;
        Ok(())
    };
    match &node.content {
        Some(Content::Inline(bytes)) => take(&bytes.0)?,
        Some(Content::Chunks(ids)) => read_blobs(repo, rt, ids, &mut take)?,
        Some(Content::Gzip(gzip)) => {
            let _permit = runtime::wait(rt, REBUILDS.acquire()).expect("semaphore open");
            let what = rel.display().to_string();
            let mut recipe = Vec::new();
            read_blobs(repo, rt, &gzip.recipe, &mut |bytes| {
                recipe.extend_from_slice(bytes);
                Ok(())
            })?;
            let recipe = crate::gzip::Recipe::decode(&recipe, &what)?;
            take(&recipe.header)?;
            let mut rebuild = crate::gzip::Rebuilder::new(recipe, what);
            read_blobs(repo, rt, &gzip.plain, &mut |plain| {
                rebuild.push(plain, &mut take)
            })?;
            rebuild.finish(&mut take)?;
            read_blobs(repo, rt, &gzip.tail, &mut take)?;
        }
        None => {}
    }
    if written != node.size {
        return Err(Error::corrupt(
            rel.display().to_string(),
            format!(
                "restored {written} bytes where the snapshot says {}",
                node.size
            ),
        ));
    }
    let digest_verified = match (digest, sha) {
        (Some(expected), Some(sha)) => {
            let actual: [u8; 32] = sha.finalize().into();
            if actual != expected {
                return Err(Error::DigestMismatch {
                    path: rel.display().to_string(),
                    digest: hex::encode(expected),
                });
            }
            true
        }
        _ => false,
    };
    Ok(ContentRead {
        bytes: written,
        digest_verified,
    })
}

/// Writes the content of the file `node` (named `path` in errors) to `out`, verified like a
/// restore (against `digest` too when given); returns its size. A failure after bytes went
/// out is still an error: the caller exits non-zero. Needs the multi-threaded runtime.
pub(crate) async fn write_file(
    repo: &Repository,
    path: &str,
    node: &Node,
    digest: Option<[u8; 32]>,
    out: &mut dyn Write,
) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::Usage(format!("{path} is not a file")));
    }
    let handle = runtime::handle();
    let read = runtime::in_place(|| {
        read_content(repo, &handle, Path::new(path), node, digest, |bytes| {
            out.write_all(bytes).map_err(|e| Error::io("the output", e))
        })
    })?;
    out.flush().map_err(|e| Error::io("the output", e))?;
    Ok(read.bytes)
}

#[cfg(test)]
mod tests {
    use super::adjacent_runs;
    use crate::format::id::Id;
    use crate::format::pack::{BlobKind, PackEntry};
    use crate::repo::index::Location;

    fn at(pack: u8, offset: u32, length: u32) -> (Id, Location) {
        let entry = PackEntry {
            kind: BlobKind::Data,
            compression: crate::format::compress::Compression::None,
            id: Id::hash_of(&[pack]),
            offset,
            length,
            raw_length: length,
        };
        let pack = Id::hash_of(&[pack, 0xff]);
        (entry.id, Location { pack, entry })
    }

    #[test]
    fn adjacent_blobs_of_one_pack_are_read_together() {
        let blobs = [
            at(1, 0, 100),
            at(1, 100, 50),
            at(1, 150, 10),
            at(1, 500, 10), // a gap
            at(2, 510, 10), // another pack
            at(2, 520, 300),
            at(2, 820, 100), // the run would span 410 bytes
        ];
        assert_eq!(adjacent_runs(&blobs, 400), [0..3, 3..4, 4..6, 6..7]);
        assert!(adjacent_runs(&[], 400).is_empty());
    }
}
