//! NFSv3 for stowage, without a mount and without root: a repository on an export
//! ([`NfsStore`]), a registry volume on an export as a backup source ([`NfsSource`]) and as a
//! restore target ([`NfsTarget`]), all addressed by `nfs://host/export/path` URLs ([`NfsUrl`]),
//! the form DTR takes for its NFS storage.
//!
//! The protocol is spoken by the pure-Rust `nfs3_client` crate (portmapper, MOUNT, NFSv3
//! over TCP); [`client`] adds a connection pool, retries across server restarts and errno
//! mapping.

pub mod client;
/// The entry point of the fuzz target `nfs_reply` (`fuzz/`, FUZZING.md); not an API.
#[doc(hidden)]
pub mod fuzzing;
mod source;
mod store;
mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod url;
mod writer;

pub use source::NfsSource;
pub use store::NfsStore;
pub use target::NfsTarget;
pub use url::NfsUrl;
