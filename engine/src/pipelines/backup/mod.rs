//! The backup pipeline: source -> parent match -> chunking and packing in parallel -> trees
//! -> index -> snapshot (FORMAT.md, "Write order").

mod archiver;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use stowage_backends::source::Source;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, SourceRef, Summary};
use crate::format::tree::Tree;
use crate::progress::Progress;
use crate::registry;
use crate::repo::packer::Packer;
use crate::repo::Repository;
use crate::runtime;
use archiver::Archiver;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub host: String,
    pub tags: Vec<String>,
    /// Recorded in the snapshot; taken from the volume name when not given.
    pub replica_id: Option<String>,
    /// A snapshot spec to compare against instead of the latest of the same host and source.
    pub parent: Option<String>,
    /// Read every file again.
    pub force: bool,
    pub ignore_inode: bool,
    pub ignore_ctime: bool,
    /// Files read at once.
    pub readers: usize,
    /// Packs are closed at about this size.
    pub pack_size: usize,
    /// Directories listed ahead of the walk, in batches of siblings (0: none; a directory is
    /// listed when the walk enters it, with the siblings after it). A listing costs a round
    /// trip on a network filesystem; several under way keep it busy.
    pub read_ahead: usize,
    /// Keep gzip registry blobs as their plaintext and a recipe (FORMAT.md, "Gzip
    /// content"); `None`: as the repository's config says.
    pub gzip: Option<bool>,
    /// Read registry blobs stored as they are again, to keep them as gzip content
    /// (`stowage optimize`), even when the parent or the digest map has them.
    pub reencode: bool,
    /// Fail on a file or directory that cannot be read instead of leaving it out of a
    /// partial snapshot.
    pub fail_on_unreadable: bool,
    /// Entries left out ([`crate::pattern::Pattern`]s, e.g. `_uploads/`).
    pub exclude: Vec<String>,
    /// Write no snapshot when nothing changed since the parent: the parent is returned,
    /// with `summary.skipped` set.
    pub skip_if_unchanged: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            host: "localhost".into(),
            tags: Vec::new(),
            replica_id: None,
            parent: None,
            force: false,
            ignore_inode: false,
            ignore_ctime: false,
            readers: 2,
            pack_size: 16 << 20,
            read_ahead: 256,
            gzip: None,
            reencode: false,
            fail_on_unreadable: false,
            exclude: Vec::new(),
            skip_if_unchanged: false,
        }
    }
}

/// How close before the parent backup's start a file's timestamp may lie and still prove
/// the file unchanged since that backup read it. A change in the same clock tick leaves the
/// same timestamp; a long write(2) sets mtime once, at its start, and may still be copying
/// when the file is read; NFS stamps with the server's clock. Files stamped later than this
/// are read again by the next backup.
pub const RACY_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

/// Backs up `source` and returns the new snapshot.
pub async fn backup(
    repo: Arc<Repository>,
    source: Arc<dyn Source>,
    opts: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let root = {
        let reader = Arc::clone(&source);
        runtime::blocking("reading the source's root", move || reader.root())
            .await?
            .map_err(|e| Error::io(source.uri(), e))?
    };
    let name = String::from_utf8_lossy(&root.name).into_owned();
    let replica_id = opts
        .replica_id
        .clone()
        .or_else(|| registry::replica_id(&name));
    let parent = find_parent(&repo, source.as_ref(), &opts).await?;
    let parent_dir = match &parent {
        Some((id, snap)) => match repo.load_tree(&snap.tree).await {
            Ok(tree) => tree.nodes.first().and_then(|n| n.subtree),
            // A damaged parent costs a full read, not the backup.
            Err(e) if e.kind() == crate::error::ErrorKind::Damaged => {
                progress.warn(&format!(
                    "the parent snapshot {} cannot be read ({e}); every file is read again \
                     (`stowage check` names the damage and the repair to run)",
                    id.short()
                ));
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    warn_on_replica_change(parent.as_ref(), replica_id.as_deref(), progress.as_ref());

    let adopted = crate::repo::packer::adopt_unindexed(&repo).await?;
    crate::repo::packer::heal_missing_packs(&repo, progress.as_ref()).await?;
    progress.phase("backup", None);
    let packer = Packer::start(Arc::clone(&repo), opts.pack_size);
    let archiver = Archiver::new(
        Arc::clone(&repo),
        Arc::clone(&source),
        Arc::clone(&packer),
        Arc::clone(&progress),
        opts.clone(),
        parent.as_ref().map(|(_, p)| {
            let since = p.time - RACY_MARGIN;
            (since.timestamp(), since.timestamp_subsec_nanos())
        }),
    );
    let root_node = Arc::clone(&archiver).archive(root, parent_dir).await?;
    let root_tree = serde_json::to_vec(&Tree {
        nodes: vec![root_node],
    })
    .expect("trees serialize");
    let tree = packer.add_async(BlobKind::Tree, &root_tree).await?;
    let counts = &archiver.counts;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut summary = Summary {
        files: get(&counts.files),
        dirs: get(&counts.dirs),
        symlinks: get(&counts.symlinks),
        bytes: get(&counts.bytes),
        files_read: get(&counts.files_read),
        bytes_read: get(&counts.bytes_read),
        files_unchanged: get(&counts.files_unchanged),
        gzip_layers: get(&counts.gzip_layers),
        gzip_partial: get(&counts.gzip_partial),
        gzip_fallbacks: get(&counts.gzip_fallbacks),
        unreadable: get(&counts.unreadable),
        excluded: get(&counts.excluded),
        digest_mismatches: get(&counts.digest_mismatches),
        mismatched: std::mem::take(
            &mut *counts.mismatched.lock().unwrap_or_else(|e| e.into_inner()),
        ),
        ..Summary::default()
    };
    drop(archiver);
    let written = packer.finish().await?;
    summary.new_blobs = written.new_blobs;
    summary.new_bytes = written.new_bytes;
    summary.stored_bytes = written.stored_bytes;
    summary.new_packs = written.new_packs;
    summary.adopted_packs = adopted as u64;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        time,
        host: opts.host.clone(),
        source: SourceRef {
            kind: source.kind().to_string(),
            uri: source.uri(),
        },
        name,
        replica_id,
        dtr_version: None,
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree,
        summary,
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        original: None,
        repaired_from: None,
        tar: None,
        tables: None,
    };
    // Nothing changed: the parent stands for this backup.
    if let (true, Some(parent_id)) = (opts.skip_if_unchanged, snapshot.parent) {
        let parent = repo.load_json::<Snapshot>("snapshots", &parent_id).await?;
        if parent.tree == snapshot.tree && written.new_blobs == 0 {
            let mut skipped = parent;
            skipped.summary = Summary {
                skipped: true,
                ..snapshot.summary
            };
            return Ok((parent_id, skipped));
        }
    }
    // Last: only now is everything it refers to durable and indexed.
    let ids = crate::repo::commit::commit(&repo, vec![snapshot.clone()], &written.relied).await?;
    Ok((ids[0], snapshot))
}

/// The snapshot to compare against: the one named, or the latest of the same host and source.
async fn find_parent(
    repo: &Repository,
    source: &dyn Source,
    opts: &BackupOptions,
) -> Result<Option<(Id, Snapshot)>> {
    if opts.force {
        return Ok(None);
    }
    if let Some(spec) = &opts.parent {
        return repo.find_snapshot(spec).await.map(Some);
    }
    let uri = source.uri();
    Ok(repo
        .snapshots()
        .await?
        .into_iter()
        .rev()
        .find(|(_, s)| s.host == opts.host && s.source.uri == uri))
}

fn warn_on_replica_change(
    parent: Option<&(Id, Snapshot)>,
    replica: Option<&str>,
    progress: &dyn Progress,
) {
    if let Some((id, snap)) = parent {
        if let (Some(before), Some(now)) = (snap.replica_id.as_deref(), replica) {
            if before != now {
                progress.warn(&format!(
                    "replica id changed from {before} (snapshot {}) to {now}",
                    id.short()
                ));
            }
        }
    }
}
