//! One entry of a snapshot, by path: `stowage dump <snapshot> <path>` prints a file (one row
//! of a DTR metadata table, a registry manifest), verified like a restore.

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::registry;
use crate::repo::reader::write_file;
use crate::repo::walk::find;
use crate::repo::Repository;

/// Writes the content of the file at `path` to `out`; returns its size. Blob ids, the size
/// and, for a registry blob, its sha256 digest are verified (a failure after bytes went out
/// is still an error: the caller exits non-zero). Needs the multi-threaded runtime.
pub async fn dump(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let node = find(repo, snapshot, path).await?;
    let digest = registry::blob_digest(Path::new(path));
    write_file(repo, path, &node, digest, out).await
}
