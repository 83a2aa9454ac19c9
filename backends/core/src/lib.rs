//! I/O for stowage: where a repository lives ([`Store`]), the local key-value cache
//! ([`KvStore`]), and where registry data is read from and restored to ([`source`], [`target`]).
//!
//! Nothing here knows the repository format; the engine builds on these traits.
//!
//! Stores are decorated, not configured: [`logging::LoggingStore`] logs requests,
//! `faulty::FaultyStore` injects faults. The modules only tests use (`faulty`,
//! `conformance`, `testing`) need the `testing` feature.

pub mod bench;
pub mod buffers;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod fs;
pub mod kv;
pub mod logging;
pub mod memory;
pub mod retry;
pub mod source;
pub mod store;
pub mod target;
#[cfg(test)]
mod test_log;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use kv::{KvStore, MemoryKv};
pub use store::{Buffered, ObjectMeta, Store, StoreError, StoreResult, Upload};

/// Runs a future to completion from synchronous code: on a runtime worker thread it hands
/// the worker's other tasks to another thread first; on a blocking thread it simply waits.
/// The [`source`] and [`target`] traits are synchronous (the engine calls them from worker
/// threads), while network backends are async.
pub fn block_on<F: std::future::Future>(handle: &tokio::runtime::Handle, future: F) -> F::Output {
    tokio::task::block_in_place(|| handle.block_on(future))
}
