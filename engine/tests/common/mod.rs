//! What the engine's integration tests share.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;

use std::path::Path;

use stowage_backends::target::FsTarget;
use stowage_backends::{KvStore, Store};
use stowage_engine::format::chunker::ChunkerParams;
use stowage_engine::NoProgress;
use stowage_engine::Snapshot;
use stowage_engine::{restore, RestoreOptions};
use stowage_engine::{InitOptions, Repository};

pub const PASSWORD: &[u8] = b"correct horse";

/// Chunks small enough that a test volume of a few MiB makes many of them.
pub fn small_chunks() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        ..InitOptions::default()
    }
}

pub async fn open(
    store: Arc<dyn Store>,
    password: &[u8],
    kv: Arc<dyn KvStore>,
) -> stowage_engine::Result<Arc<Repository>> {
    Ok(Arc::new(
        Repository::open(store, password, move |_| Ok(kv)).await?,
    ))
}

/// Incompressible bytes, the same for a seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Restores `snap` into `out` (which must not hold its directory yet).
pub async fn restore_into(repo: &Arc<Repository>, snap: &Snapshot, out: &Path) {
    let target = Arc::new(FsTarget::new(out).expect("target directory"));
    restore(
        Arc::clone(repo),
        snap,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .expect("restore");
}
