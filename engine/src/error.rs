//! Typed errors of the engine. Each carries what failed and where, and its [`ErrorKind`]
//! says whose fault it is: the user's input, an archive handed in, a damaged repository, an
//! unreachable store or disk, another process, or a bug. The CLI alone turns kinds into exit
//! codes; messages say what to do.

use stowage_backends::kv::KvError;
use stowage_backends::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose fault an error is, and so what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// What was asked cannot be done as asked: an option, a path or snapshot that does not
    /// exist, a target that would be overwritten, a newer repository format. Fix the command.
    Usage,
    /// There is no repository at the location given.
    NoRepository,
    /// The password opens none of the repository's keys.
    WrongPassword,
    /// An archive or stream handed in is not what it claims: a truncated, hostile or
    /// unsupported tar. Nothing of it was recorded.
    BadInput,
    /// The repository is damaged, tampered with or misses objects it needs: run `check`.
    Damaged,
    /// A store, source, target or the local disk failed or could not be reached; the
    /// message has the system's reason. Usually worth running again once it is fixed.
    Unreachable,
    /// Another stowage process changed the repository meanwhile (a prune beside a backup);
    /// running again resolves it.
    Conflict,
    /// A bug in stowage (a worker panicked, an internal rule was broken): please report it.
    Bug,
}

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
    /// The command asked for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    /// An archive handed in (`what`: the tar, an entry of it) is not what it claims.
    #[error("{what}: {detail}")]
    BadInput { what: String, detail: String },
    /// Another process changed the repository while this one read it.
    #[error("{0}")]
    Conflict(String),
    /// A broken internal rule or a panicked worker.
    #[error("internal error (a bug in stowage; please report it): {0}")]
    Bug(String),
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

    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub fn bad_input(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::BadInput {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn bug(message: impl Into<String>) -> Self {
        Error::Bug(message.into())
    }

    /// Whose fault this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoRepository { .. } => ErrorKind::NoRepository,
            Error::WrongPassword { .. } => ErrorKind::WrongPassword,
            Error::AlreadyExists(_)
            | Error::UnsupportedVersion { .. }
            | Error::SnapshotNotFound(_)
            | Error::AmbiguousSnapshot(_)
            | Error::KeysDiffer { .. }
            | Error::Usage(_) => ErrorKind::Usage,
            Error::Corrupt { .. } | Error::MissingBlob(_) | Error::DigestMismatch { .. } => {
                ErrorKind::Damaged
            }
            // An object the index or a snapshot names is gone: the repository lacks it.
            Error::Store(e) if e.is_not_found() => ErrorKind::Damaged,
            Error::Store(_) | Error::Io { .. } | Error::Cache(_) => ErrorKind::Unreachable,
            Error::BadInput { .. } => ErrorKind::BadInput,
            Error::PruneRace { .. } | Error::Conflict(_) => ErrorKind::Conflict,
            Error::Bug(_) => ErrorKind::Bug,
        }
    }
}

/// For I/O inside a step that does not know its path; callers add the path.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io("", source)
    }
}

/// The one helper for joined tasks (blocking ones through `runtime::blocking`, and `spawn`):
/// a task that panicked or was cancelled is a bug, named by what it was doing.
pub trait Joined<T> {
    fn joined(self, what: &str) -> Result<T>;
}

impl<T> Joined<T> for std::result::Result<T, tokio::task::JoinError> {
    fn joined(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::bug(format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_whose_fault() {
        let missing = Error::Store(StoreError::NotFound {
            store: "s".into(),
            key: "data/ab/x".into(),
        });
        assert_eq!(missing.kind(), ErrorKind::Damaged);
        let io = Error::io("p", std::io::Error::other("disk"));
        assert_eq!(io.kind(), ErrorKind::Unreachable);
        assert_eq!(Error::usage("x").kind(), ErrorKind::Usage);
        assert_eq!(Error::bad_input("t", "x").kind(), ErrorKind::BadInput);
        assert_eq!(Error::corrupt("o", "x").kind(), ErrorKind::Damaged);
        assert_eq!(
            Error::WrongPassword { keys: 1 }.kind(),
            ErrorKind::WrongPassword
        );
    }

    #[tokio::test]
    async fn a_panicked_task_is_a_bug() {
        let result = tokio::task::spawn(async { panic!("boom") }).await;
        let e = result.joined("the test task").expect_err("panicked");
        assert_eq!(e.kind(), ErrorKind::Bug);
        assert!(e.to_string().contains("the test task"), "{e}");
    }
}
