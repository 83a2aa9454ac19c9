//! What stowage knows of the registry v2 storage layout: the path grammar
//! ([`layout`]: blob data, layer and revision links, tags), partial restores by repository
//! and tag ([`select`]), which snapshots hold a blob or a path ([`find`]), and differences between snapshots as a registry operator reads them
//! ([`diff`]).
//!
//! May use: `format` and `repo` (a selection and a diff read trees and link files through
//! the repository's one reader and walker). The path grammar itself uses nothing.

pub mod diff;
pub mod find;
pub mod layout;
pub mod select;

pub use layout::{blob_digest, replica_id};
