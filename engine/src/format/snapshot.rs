//! Snapshots (FORMAT.md, "Snapshots"): the last object a backup writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::id::Id;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// `fs` for a directory; later `s3`, `nfs`, `tar`.
    pub kind: String,
    /// Where it was read: an absolute path or a URL.
    pub uri: String,
}

/// What a backup did, in files and bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sum of all file sizes in the snapshot.
    pub bytes: u64,
    /// Files whose content was read (new or changed).
    pub files_read: u64,
    pub bytes_read: u64,
    /// Files taken from the parent snapshot or the registry digest map without reading.
    pub files_unchanged: u64,
    pub new_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub new_bytes: u64,
    /// Bytes added to the repository (packs and index files).
    pub stored_bytes: u64,
    pub new_packs: u64,
    /// Packs a killed run had stored but not indexed, indexed and reused by this one.
    #[serde(default)]
    pub adopted_packs: u64,
    /// Gzip registry blobs kept as gzip content (FORMAT.md, "Gzip content"), whole or in
    /// part (the rest kept as it is), and those stored as they are because no part of them
    /// could be re-created exactly.
    #[serde(default)]
    pub gzip_layers: u64,
    #[serde(default)]
    pub gzip_partial: u64,
    #[serde(default)]
    pub gzip_fallbacks: u64,
    /// Files and directories that could not be read (permissions): left out of the
    /// snapshot, each named in a warning. A snapshot with any is partial.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u64,
    /// Registry blobs whose bytes did not match their digest at backup time (the registry's
    /// own damage, or a write that raced the backup): stored as found, which a restore
    /// brings back with a warning. A snapshot with any is partial.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digest_mismatches: u64,
    /// Their paths (from the backed-up directory), the first [`MISMATCHES_NAMED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<String>,
    /// Files and directories left out by `--exclude` patterns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: u64,
    /// Never in a stored snapshot: set on what `backup --skip-if-unchanged` returns when
    /// nothing changed since the parent, which is returned instead of a new snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub duration_secs: f64,
}

/// Registry blobs named in [`Summary::mismatched`] at most.
pub const MISMATCHES_NAMED: usize = 1000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: DateTime<Utc>,
    pub host: String,
    pub source: SourceRef,
    /// Name of the backed-up directory (the single entry of the root tree).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtr_version: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// The tree holding the backed-up directory as its one node.
    pub tree: Id,
    pub summary: Summary,
    pub program_version: String,
    /// Set on a copy made by `stowage copy`: the id of the snapshot it was copied from, or of
    /// that snapshot's own original when it was a copy too (the first id of the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Set by `stowage repair snapshots`: the damaged snapshot this one was rewritten from,
    /// without the files whose blobs were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_from: Option<Id>,
    /// Set when the snapshot was made from a tar stream (`backup-metadata`, `import-tar`):
    /// what rebuilds that exact tar from the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<TarLayout>,
    /// A DTR metadata backup's tables (`rethink/<table>/<n>`) with their row counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, u64>>,
}

/// The bytes of a tar that are not entry content (FORMAT.md, "Tar snapshots").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarLayout {
    /// The skeleton: every header, PAX and long-name record, padding, and the end-of-archive
    /// blocks with whatever followed them, in order, as data blobs.
    pub skeleton: Vec<Id>,
    /// Size and sha256 (hex) of the whole tar.
    pub size: u64,
    pub sha256: String,
    /// The tar had several top-level entries: the tree's top directory (`name`) was added
    /// and is not part of the tar's paths.
    #[serde(default)]
    pub added_top: bool,
}

impl Snapshot {
    /// Blobs the snapshot needs beyond its trees and their files: a tar snapshot's skeleton.
    pub fn extra_blobs(&self) -> &[Id] {
        self.tar.as_ref().map_or(&[], |t| t.skeleton.as_slice())
    }

    /// The id that names this backup in every repository it was copied to: its `original`,
    /// or `id` (its own id) when it is not a copy.
    pub fn origin(&self, id: Id) -> Id {
        self.original.unwrap_or(id)
    }
}

/// Which snapshots a command works on, as restic selects them: each list that is not empty
/// must match (any of its entries); a tag entry `a,b` needs both tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    /// Sources (`source.uri`: a path or a URL).
    pub paths: Vec<String>,
    pub replicas: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|e| f(e))
        };
        let tagged = |group: &str| {
            group
                .split(',')
                .filter(|t| !t.is_empty())
                .all(|tag| snapshot.tags.iter().any(|t| t == tag))
        };
        let path = |p: &str| snapshot.source.uri.trim_end_matches('/') == p.trim_end_matches('/');
        let replica = |r: &str| snapshot.replica_id.as_deref() == Some(r);
        any(&self.hosts, &|h| snapshot.host == h)
            && any(&self.tags, &tagged)
            && any(&self.paths, &path)
            && any(&self.replicas, &replica)
    }

    pub fn is_empty(&self) -> bool {
        self == &SnapshotFilter::default()
    }
}

/// Picks the snapshot `spec` names: `latest`, a full id or a unique id prefix.
pub fn select<'a>(spec: &str, snapshots: &'a [(Id, Snapshot)]) -> Result<&'a (Id, Snapshot)> {
    if spec == "latest" {
        return snapshots
            .iter()
            .max_by_key(|(_, s)| s.time)
            .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    let spec_lower = spec.to_ascii_lowercase();
    let mut matches = snapshots
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&spec_lower));
    match (matches.next(), matches.next()) {
        (Some(found), None) if !spec.is_empty() => Ok(found),
        (Some(_), Some(_)) => Err(Error::AmbiguousSnapshot(spec.into())),
        _ => Err(Error::SnapshotNotFound(spec.into())),
    }
}
