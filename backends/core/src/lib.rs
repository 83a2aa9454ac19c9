//! I/O for stowage: where a repository lives ([`Store`]), the local key-value cache
//! ([`KvStore`]), and where registry data is read from and restored to ([`source`], [`target`]).
//!
//! Nothing here knows the repository format; the engine builds on these traits.

pub mod bench;
pub mod conformance;
pub mod faulty;
pub mod fs;
pub mod kv;
pub mod memory;
pub mod source;
pub mod store;
pub mod target;

pub use kv::{KvStore, MemoryKv};
pub use store::{ObjectMeta, Store, StoreError, StoreResult};
