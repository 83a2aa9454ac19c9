//! S3 for stowage: a repository in a bucket ([`S3Store`]), a registry that uses the
//! registry's `s3` storage driver as a backup source ([`S3Source`]), and a bucket as a
//! restore target ([`S3Target`]).
//!
//! Requests go through `object_store` (retries with backoff, multipart uploads, conditional
//! create); `aws-sdk-s3` is used where `object_store` has no API: Object Lock retention and
//! storage classes on writes, and retention checks before deletes. Both clients share one
//! credential chain (the standard AWS environment, profile and instance-metadata chain).

mod client;
mod location;
mod options;
mod source;
mod store;
mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{ObjectInfo, S3Client};
pub use location::S3Url;
pub use options::{LockMode, ObjectLock, S3Options, StaticCredentials};
pub use source::S3Source;
pub use store::S3Store;
pub use target::S3Target;

pub(crate) use stowage_backends::block_on;

/// An error with its causes, each cause added only when the message does not already say
/// it: object_store's messages repeat some causes and leave out others (such as the
/// "Connection refused" of an unreachable endpoint).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    message
}
