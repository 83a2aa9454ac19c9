//! The storage contract every repository backend fulfils.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found in {store}")]
    NotFound { store: String, key: String },
    // The cause is part of the message, not an error `source`, so that printing the error
    // chain does not repeat it.
    #[error("{store}: {op} {key}: {cause}")]
    Io {
        store: String,
        op: &'static str,
        key: String,
        cause: std::io::Error,
    },
    #[error("{store}: invalid key {key:?}: {reason}")]
    InvalidKey {
        store: String,
        key: String,
        reason: &'static str,
    },
    #[error("{store}: {key} is under object lock retention until {until}; it cannot be deleted before then")]
    Locked {
        store: String,
        key: String,
        until: String,
    },
    #[error("{store}: {op} {key}: injected fault")]
    Injected {
        store: String,
        op: &'static str,
        key: String,
    },
}

impl StoreError {
    /// The error of a file-backed store's `op` on `key`: a missing file is
    /// [`StoreError::NotFound`] (but for `put`, where it means a missing directory).
    pub fn from_io(store: String, op: &'static str, key: &str, cause: std::io::Error) -> Self {
        if cause.kind() == std::io::ErrorKind::NotFound && op != "put" {
            StoreError::NotFound {
                store,
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                store,
                op,
                key: key.to_string(),
                cause,
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An object's key and size, as `list` and `head` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Where a repository lives: a flat namespace of immutable objects.
///
/// The contract (checked by the conformance suite, `conformance.rs`, for every backend):
/// - Keys are `/`-separated relative paths of `[A-Za-z0-9._-]` segments.
/// - `put` is atomic: a reader sees either no object or the whole object, never a prefix,
///   and once `put` returns the object is durable. Putting an existing key either keeps the
///   existing object (a store that honours conditional create, e.g. S3 `If-None-Match`) or
///   replaces it atomically. stowage only puts keys that are content hashes or fresh random
///   ids, so both leave the same bytes; correctness never depends on put-if-absent.
/// - Read-after-write: `get`, `head` and `list` see an object once its `put` returned.
/// - `get`/`get_range`/`head` of a missing key fail with [`StoreError::NotFound`];
///   `delete` of a missing key succeeds; `delete` of an object under retention (S3 Object
///   Lock) fails with [`StoreError::Locked`] and leaves it in place.
/// - `list(prefix)` returns every object whose key starts with `prefix`, in no given order.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A short human description (`/srv/backup`, `memory`), used in messages.
    fn describe(&self) -> String;
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()>;
    async fn get(&self, key: &str) -> StoreResult<Bytes>;
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes>;
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta>;
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Whether objects are written with retention (S3 Object Lock).
    fn retains(&self) -> bool {
        false
    }

    /// Starts an object written piece by piece and named when it is complete (a pack, whose
    /// key is the hash of its bytes), under the directory `dir` (a key prefix without `/`).
    /// The default keeps the bytes in memory (`size_hint` reserved) and `put`s them at the
    /// end; a directory store writes them to a file in `dir` as they come, so a backup holds
    /// no pack in memory. Async because starting may take a round trip (a network store
    /// creates the file on the server).
    async fn start_upload(&self, dir: &str, size_hint: usize) -> StoreResult<Box<dyn Upload>> {
        let _ = dir;
        Ok(Box::new(Buffered(Vec::with_capacity(size_hint))))
    }

    /// Makes every key in `keys` retained for at least the store's full retention period from
    /// now, extending where it is shorter; returns how many were extended. Stores without
    /// retention do nothing.
    async fn extend_retention(&self, keys: &[String]) -> StoreResult<u64> {
        let _ = keys;
        Ok(0)
    }
}

/// In the name of every temporary file a file-backed store writes (an object before its
/// rename): such files are never listed, and a leftover one is not an object.
pub const TEMP_MARK: &str = ".stowage-tmp-";

/// An object being written (see [`Store::start_upload`]). Writes block. Dropped without
/// [`Upload::finish`], it is discarded.
#[async_trait]
pub trait Upload: Send {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Stores what was written under `key` in `store` (the store that started the upload),
    /// as atomically and durably as [`Store::put`].
    async fn finish(self: Box<Self>, store: &dyn Store, key: &str) -> StoreResult<()>;
}

/// The default upload: in memory, one `put` at the end.
#[derive(Default)]
pub struct Buffered(Vec<u8>);

#[async_trait]
impl Upload for Buffered {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    async fn finish(self: Box<Self>, store: &dyn Store, key: &str) -> StoreResult<()> {
        store.put(key, Bytes::from(self.0)).await
    }
}

/// Checks a key against the contract's alphabet, so every backend refuses the same keys.
pub fn validate_key(store: &str, key: &str) -> StoreResult<()> {
    let invalid = |reason| {
        Err(StoreError::InvalidKey {
            store: store.to_string(),
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return invalid("empty or dot segment");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid("characters outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}
