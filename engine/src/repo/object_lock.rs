//! Snapshots that stay immutable under S3 Object Lock (README, "Immutable offsite copies").
//!
//! Retention is per object and starts when the object is written, while an incremental
//! snapshot reuses packs written on earlier nights. Before a snapshot is written into a
//! store that retains objects, every object it depends on — the config, the key files, the
//! index files and each pack holding one of its blobs — is made retained for the store's
//! full period from now. Only then is the snapshot written, so a snapshot never exists
//! whose data could be deleted before its own retention ends.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::pack::Pack;
use crate::repo::Repository;

/// Extends the retention of everything a snapshot needs whose blobs are all in the packs
/// `relied` (as the packer reports them); returns how many objects were extended (0 for
/// stores without retention).
pub async fn protect(repo: &Repository, relied: &HashSet<Id>) -> Result<u64> {
    let store = repo.store();
    if !store.retains() {
        return Ok(0);
    }
    let mut keys = vec!["config".to_string()];
    for dir in ["keys/", "index/"] {
        keys.extend(store.list(dir).await?.into_iter().map(|m| m.key));
    }
    keys.extend(relied.iter().map(Pack::key));
    Ok(store.extend_retention(&keys).await?)
}
