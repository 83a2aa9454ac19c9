//! The stowage archive engine: the repository format (see `FORMAT.md`) and the backup,
//! restore, check and copy pipelines. It knows no concrete backend: repositories live on a
//! [`stowage_backends::Store`], data comes from a [`stowage_backends::source::Source`] and
//! goes to a [`stowage_backends::target::Target`].

pub mod backup;
pub mod bench;
pub mod check;
pub mod chunker;
pub mod commit;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod dump;
pub mod error;
pub mod forget;
#[cfg(test)]
mod golden;
pub mod gzip;
pub mod id;
pub mod index;
pub mod marks;
pub mod pack;
pub mod progress;
pub mod prune;
mod reach;
pub mod registry;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod select;
pub mod snapshot;
pub mod snapshot_source;
pub mod stats;
pub mod tar_in;
pub mod tar_out;
mod tar_walk;
pub mod tree;
mod windows;

pub use error::{Error, Result};
pub use id::Id;
pub use repo::Repository;
