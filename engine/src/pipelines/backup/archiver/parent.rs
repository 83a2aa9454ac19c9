//! Parent match and change detection: whether a file's node in the parent snapshot (or, for
//! a registry blob, the digest map) still describes it, so its content need not be read.

use std::path::Path;

use stowage_backends::source::EntryMeta;

use super::{add, Archiver, GZIP_MIN};
use crate::error::Result;
use crate::format::tree::{Content, Node, NodeKind};
use crate::registry;

impl Archiver {
    /// Whether `previous` (from the parent snapshot) still describes the file.
    fn unchanged(&self, meta: &EntryMeta, previous: &Node) -> bool {
        let racy = self.racy_since.is_some_and(|since| {
            racy(previous.mtime, previous.mtime_ns, since)
                || racy(previous.ctime, previous.ctime_ns, since)
        });
        !self.opts.force
            && !racy
            && previous.kind == NodeKind::File
            && previous.size == meta.size
            && (previous.mtime, previous.mtime_ns) == (meta.mtime.secs, meta.mtime.nanos)
            && (self.opts.ignore_ctime
                || (previous.ctime, previous.ctime_ns) == (meta.ctime.secs, meta.ctime.nanos))
            && (self.opts.ignore_inode || previous.inode == meta.inode)
    }

    /// Content that need not be read again: from the parent snapshot, or, for registry
    /// blobs (content-addressed, immutable), from the digest map.
    fn known_content(
        &self,
        rel: &Path,
        meta: &EntryMeta,
        previous: Option<&Node>,
    ) -> Result<Option<Content>> {
        // Stored as it is, to be read again for gzip content (`optimize`).
        let reencode = |c: &Content| {
            self.opts.reencode
                && matches!(c, Content::Chunks(_))
                && meta.size >= GZIP_MIN
                && registry::blob_digest(rel).is_some()
        };
        if let Some(prev) = previous.filter(|p| self.unchanged(meta, p)) {
            match &prev.content {
                Some(c) if reencode(c) => {}
                // Inline content has no blobs: always stored.
                Some(c) if self.packer.stored(c.blobs())? => return Ok(Some(c.clone())),
                _ => {}
            }
        }
        if self.opts.force {
            return Ok(None);
        }
        if let Some(digest) = registry::blob_digest(rel) {
            if let Some(record) = self.repo.index().digest(&digest)? {
                if record.size == meta.size
                    && !reencode(&record.content)
                    && self.packer.stored(record.content.blobs())?
                {
                    return Ok(Some(record.content));
                }
            }
        }
        Ok(None)
    }

    /// The file's node when its content need not be read.
    pub(super) fn known_file(
        &self,
        rel: &Path,
        meta: &EntryMeta,
        previous: Option<&Node>,
    ) -> Result<Option<Node>> {
        let Some(content) = self.known_content(rel, meta, previous)? else {
            return Ok(None);
        };
        let mut node = Node::from_meta(meta).expect("files have nodes");
        add(&self.counts.files, 1);
        add(&self.counts.files_unchanged, 1);
        add(&self.counts.bytes, meta.size);
        self.progress.advance(meta.size);
        node.content = Some(content);
        Ok(Some(node))
    }
}

/// Whether a timestamp (seconds, nanoseconds) is too close to `since` to prove anything. A
/// timestamp of whole seconds (nanoseconds 0: a filesystem that keeps seconds, S3) stands for
/// its whole second.
fn racy(secs: i64, nanos: u32, since: (i64, u32)) -> bool {
    match nanos {
        0 => secs >= since.0,
        _ => (secs, nanos) >= since,
    }
}

#[cfg(test)]
mod tests {
    use super::racy;

    #[test]
    fn racy_timestamps_to_the_nanosecond_or_by_their_whole_second() {
        let since = (100, 950_000_000);
        assert!(racy(100, 960_000_000, since));
        assert!(racy(101, 1, since));
        assert!(!racy(100, 940_000_000, since));
        // Whole seconds (a filesystem that keeps only seconds): 100 may be 100.99.
        assert!(racy(100, 0, since));
        assert!(!racy(99, 0, since));
    }
}
