//! The `config` object (FORMAT.md, "Config"): plain JSON, so that any version can read
//! `version` before anything else. Key files bind to its BLAKE3, so it cannot be swapped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::chunker::ChunkerParams;

/// The newest repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The `config` object: stored as plain JSON so any version can read `version` first.
/// Key files bind to its BLAKE3, so it cannot be swapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: String,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub encryption: String,
    pub created: DateTime<Utc>,
    /// Backups keep gzip registry blobs as gzip content unless told otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gzip: bool,
}

impl Config {
    /// The bytes of the `config` object.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serializes")
    }
}
