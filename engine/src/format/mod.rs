//! The repository format of FORMAT.md as types and bytes: ids, sealing and keys, the chunker,
//! compression, packs, index files, trees, snapshots, marks and the config. Each module
//! names the FORMAT.md section it implements; the golden tests pin their bytes.
//!
//! May use: `error` and the crates that define the encodings (ring, blake3, fastcdc, zstd,
//! serde). Never a `Store`, the cache, or anything above: reading and writing these objects
//! in a repository is `repo/`'s job.

pub mod chunker;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod id;
pub mod index_file;
pub mod marks;
pub mod pack;
pub mod snapshot;
pub mod tree;
