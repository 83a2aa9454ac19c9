//! Repository statistics: what is stored, and how much deduplication and compression save.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::format::snapshot::Summary;
use crate::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    pub snapshots: usize,
    pub packs: usize,
    /// Bytes of all packs, index files and snapshots in the store.
    pub stored_bytes: u64,
    pub blobs: u64,
    /// Plaintext bytes of all unique blobs.
    pub unique_bytes: u64,
    /// Sum of the sizes of all snapshots (what restoring every one of them would write).
    pub logical_bytes: u64,
    /// logical / unique: what deduplication saves.
    pub dedup_ratio: f64,
    /// unique / stored.
    pub compression_ratio: f64,
    pub latest: Option<Summary>,
}

pub async fn stats(repo: &Repository) -> Result<RepoStats> {
    let snapshots = repo.snapshots().await?;
    let mut stored_bytes = 0;
    for prefix in ["data/", "index/", "snapshots/"] {
        stored_bytes += repo
            .store()
            .list(prefix)
            .await?
            .iter()
            .map(|m| m.size)
            .sum::<u64>();
    }
    let (mut blobs, mut unique_bytes) = (0u64, 0u64);
    let mut packs = HashSet::new();
    repo.index().for_each(&mut |_, loc| {
        blobs += 1;
        unique_bytes += u64::from(loc.entry.raw_length);
        packs.insert(loc.pack);
    })?;
    let logical_bytes = snapshots.iter().map(|(_, s)| s.summary.bytes).sum::<u64>();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(RepoStats {
        snapshots: snapshots.len(),
        packs: packs.len(),
        stored_bytes,
        blobs,
        unique_bytes,
        logical_bytes,
        dedup_ratio: ratio(logical_bytes, unique_bytes),
        compression_ratio: ratio(unique_bytes, stored_bytes),
        latest: snapshots.last().map(|(_, s)| s.summary.clone()),
    })
}
