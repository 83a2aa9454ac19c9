//! Typed errors of the engine. Each carries what failed and where; the CLI turns them into
//! messages and exit codes.

use stowage_backends::kv::KvError;
use stowage_backends::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no stowage repository at {location}: {detail} (create one with `stowage init`)")]
    NoRepository { location: String, detail: String },
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    #[error("wrong password: none of the {keys} key(s) of the repository opens with it")]
    WrongPassword { keys: usize },
    #[error(
        "repository format version {found} is newer than this stowage understands \
         (up to {supported}); upgrade stowage"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// Authentication or hash mismatch: data was damaged or tampered with.
    #[error("corrupt {object}: {detail}")]
    Corrupt { object: String, detail: String },
    #[error("blob {0} is not in the repository's index (run `stowage check`)")]
    MissingBlob(crate::Id),
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {0:?} matches several snapshots; give more digits")]
    AmbiguousSnapshot(String),
    #[error("{path}: restored content does not match registry digest sha256:{digest}")]
    DigestMismatch { path: String, digest: String },
    // The cause is part of the message, not an error `source`, so that printing the error
    // chain does not repeat it.
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] KvError),
    /// `copy` moves sealed blobs as they are, which needs both repositories to share keys.
    #[error(
        "destination repository {dst} was not created by `stowage copy` from {src}: blob ids \
         differ (copy into a new, empty location to create a destination that shares its keys)"
    )]
    KeysDiffer { src: String, dst: String },
    /// A backup relied on a pack that a prune running meanwhile marked and may delete soon.
    #[error(
        "no snapshot written: {packs} pack(s) this backup reuses were marked by a prune running \
         meanwhile and may be deleted from {delete_after} (e.g. pack {example}); run the backup \
         again (it stores those blobs anew) and give prune a --grace longer than a backup takes"
    )]
    PruneRace {
        packs: usize,
        example: crate::Id,
        delete_after: chrono::DateTime<chrono::Utc>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// For I/O inside a step that does not know its path; callers add the path.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io("", source)
    }
}
