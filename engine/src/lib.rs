//! The stowage archive engine: the repository format (see `FORMAT.md`) and the backup,
//! restore, check, copy, prune and tar pipelines. It knows no concrete backend: repositories
//! live on a [`stowage_backends::Store`], data comes from a
//! [`stowage_backends::source::Source`] and goes to a [`stowage_backends::target::Target`].
//!
//! # Layers
//!
//! Each folder depends only on the ones above it in this list; its `mod.rs` says what lives
//! there and what it may use. Beside them, any of them may use `error`, `progress`,
//! `pattern` (path patterns), `extsort` (sorting in bounded memory, spilling to temporary
//! files) and `runtime` (the one crossing between async and blocking code, see below).
//!
//! | folder | what lives there |
//! |---|---|
//! | [`format`](mod@format) | FORMAT.md as types and bytes: ids, sealing and keys, chunker, compression, packs, index files, trees, snapshots, marks, config |
//! | [`gzip`] | gzip content: splitting a deflate stream into pieces and re-creating its exact bytes (preflate-rs) |
//! | `repo` | a repository on a Store: open and init, the cache-backed index, the packer, commit, Object Lock, the one verified reader and the tree walker |
//! | `registry` | the registry v2 path grammar, partial restores by repository and tag, snapshot diffs |
//! | `tar` | tar archives in (metadata and image tars, kept exactly) and out (a snapshot as a tar stream) |
//! | `pipelines` | one entry function per command: backup, restore, check, repair, copy, prune, forget, dump, stats, optimize, bench |
//!
//! # The runtime rule
//!
//! The engine runs on tokio's multi-threaded runtime. A [`stowage_backends::Store`] is
//! async and is awaited from async code. A `Source`, a `Target` and the local cache
//! ([`stowage_backends::KvStore`]) block: they are called from blocking threads (a task
//! handed over with `runtime::blocking`, or a thread a pipeline owns), never awaited. Where
//! blocking code must read from the store (the verified reader under a restore or a tar
//! stream), it waits on a runtime handle taken in async code (`runtime::handle`,
//! `runtime::wait`); CPU work (chunking, sealing, compression, gzip re-creation) runs on
//! blocking threads too. Every crossing goes through `runtime.rs`, and nowhere else: a
//! blocking task that panicked is an [`Error::Bug`] named by what it was doing, through
//! [`error::Joined`].

pub mod error;
mod extsort;
pub mod format;
/// Entry points for the fuzz targets (`fuzz/`, FUZZING.md); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gzip;
pub mod pattern;
mod pipelines;
mod progress;
mod registry;
mod repo;
mod runtime;
mod tar;

/// Golden format tests: FORMAT.md version 1 pinned byte for byte.
#[cfg(test)]
mod golden;

pub use error::{Error, ErrorKind, Result};
pub use format::chunker::ChunkerParams;
pub use format::id::Id;
pub use format::snapshot::{Snapshot, SnapshotFilter, SourceRef, Summary};
pub use format::tree::{Node, NodeKind};
pub use progress::{NoProgress, Progress};
pub use repo::{Config, DamagedSnapshot, InitOptions, Repository, SnapshotList, FORMAT_VERSION};

// The pipelines' entry points and their options and reports.
pub use pipelines::backup::{backup, BackupOptions, RACY_MARGIN};
pub use pipelines::bench::{backup_and_restore, PipelineRow};
pub use pipelines::check::{check, check_with, CheckReport, DamagedPack, DataSubset, PackDamage};
pub use pipelines::copy::{copy, copy_with, CopyOptions, CopyPlan, CopySummary};
pub use pipelines::dump::dump;
pub use pipelines::optimize::SnapshotSource;
pub use pipelines::prune::{prune, PruneOptions, PruneReport};
pub use pipelines::repair::{
    repair_index, repair_snapshots, RepairIndexReport, RepairSnapshotsOptions,
    RepairSnapshotsReport, RepairedSnapshot, REPAIRED_TAG,
};
pub use pipelines::restore::{restore, RestoreOptions, RestoreSummary};
pub use pipelines::stats::{stats, RepoStats};
pub use registry::diff::{diff, BlobChange, Diff, TagChange};
pub use registry::find::{find_digest, find_paths, Found};
pub use registry::select::{check_path, registry_selection, Selection};
pub use tar::import::{backup_tar, TarOptions};
pub use tar::original::write_original_tar;
pub use tar::volume::restore_tar;

/// Which snapshots a keep policy keeps, and removing the others (`stowage forget`).
pub mod forget {
    pub use crate::pipelines::forget::{forget, plan, remove, Decision, Group, KeepPolicy};
}

/// What a copy would move, before it moves it (`stowage copy --dry-run`).
pub use pipelines::copy::plan as copy_plan;

/// A `--include-path` made canonical (`/`-separated, no `.`, `..` refused).
pub use registry::select::normalize as normalize_path;

/// Finds the node at a path of a snapshot (for tests and tools that inspect one entry).
pub use repo::walk::{find, Walk};
