//! End-to-end timing of the pipelines on one store (`stowage bench`): a fresh repository,
//! one backup of a volume, one restore of it. The store-level measurements (put, get, list,
//! delete by object size) are in `stowage_backends::bench`.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use stowage_backends::source::Source;
use stowage_backends::target::Target;
use stowage_backends::{MemoryKv, Store};

use crate::error::Result;
use crate::pipelines::backup::{backup, BackupOptions};
use crate::pipelines::restore::{restore, RestoreOptions};
use crate::progress::NoProgress;
use crate::repo::{InitOptions, Repository};

/// One pipeline run on one store.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRow {
    pub store: String,
    /// `backup` or `restore`.
    pub op: &'static str,
    /// Bytes of file content backed up or restored.
    pub bytes: u64,
    pub files: u64,
    /// Bytes the repository grew by (backup).
    pub stored_bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

/// Creates a repository in the empty `store`, backs `source` up into it and restores the
/// snapshot to `target`, timing both. The caller removes the repository afterwards.
pub async fn backup_and_restore(
    store: Arc<dyn Store>,
    source: Arc<dyn Source>,
    target: Arc<dyn Target>,
) -> Result<Vec<PipelineRow>> {
    let password = b"stowage bench";
    Repository::init(store.as_ref(), password, &InitOptions::default()).await?;
    let open = || async {
        let kv = Arc::new(MemoryKv::new());
        Ok::<_, crate::Error>(Arc::new(
            Repository::open(Arc::clone(&store), password, move |_| Ok(kv)).await?,
        ))
    };
    let row = |op, bytes, files, stored_bytes, started: Instant| {
        let seconds = started.elapsed().as_secs_f64();
        PipelineRow {
            store: store.describe(),
            op,
            bytes,
            files,
            stored_bytes,
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        }
    };

    let started = Instant::now();
    let (_, snapshot) = backup(
        open().await?,
        source,
        BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await?;
    let s = &snapshot.summary;
    let backed_up = row("backup", s.bytes, s.files, s.stored_bytes, started);

    // A fresh cache, as on the machine a restore usually runs on.
    let started = Instant::now();
    let restored = restore(
        open().await?,
        &snapshot,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await?;
    let restored = row("restore", restored.bytes, restored.files, 0, started);
    Ok(vec![backed_up, restored])
}
