//! A [`Store`] in a local directory (local disk or an NFS mount, whose transient errors are
//! retried: [`crate::retry`]).
//!
//! Writes are atomic and durable: a temporary file beside the object is written, fsynced and
//! renamed over the key, then the directory is fsynced. Directories are created 0700 and
//! objects 0600: a repository holds key material.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::retry::retry;
use crate::store::{validate_key, ObjectMeta, Store, StoreError, StoreResult};

const TEMP_MARK: &str = ".stowage-tmp-";

#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
}

impl FsStore {
    /// A store rooted at `root`; the directory is created (0700) when missing.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)?;
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// A store rooted at an existing directory.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        if !fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        validate_key(&self.describe(), key)?;
        Ok(self.root.join(key))
    }

    fn error(&self, op: &'static str, key: &str, e: io::Error) -> StoreError {
        StoreError::from_io(self.describe(), op, key, e)
    }

    /// Runs blocking file I/O off the async runtime, again on a network mount's transient
    /// errors (every operation is safe to repeat).
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: impl Fn() -> io::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let at = self.root.join(key);
        let result = tokio::task::spawn_blocking(move || retry(&at, op, f))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        result.map_err(|e| self.error(op, key, e))
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("key has no parent"))?;
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!("{TEMP_MARK}{:016x}", rand::random::<u64>()));
    let temp = PathBuf::from(temp_name);
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
    };
    let mut file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs_durably(dir)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let written = file.write_all(data).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents (0700), fsyncing the parent of each directory it
/// creates, so a new directory entry is as durable as the object written into it.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while fs::metadata(at).is_err() {
        missing.push(at);
        at = at
            .parent()
            .ok_or_else(|| io::Error::other("no existing ancestor"))?;
    }
    for dir in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => other?,
        }
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

fn read_range(path: &Path, range: Range<u64>) -> io::Result<Bytes> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let end = range.end.min(size);
    let start = range.start.min(end);
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(Bytes::from(buf))
}

fn list_under(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(key) = rel.to_str() else { continue };
        if key.contains(TEMP_MARK) {
            continue;
        }
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Descend only where keys below can still match the prefix.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                list_under(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            out.push(ObjectMeta {
                key: key.to_string(),
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Store for FsStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let path = self.path(key)?;
        self.blocking("put", key, move || write_atomic(&path, &data))
            .await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let path = self.path(key)?;
        self.blocking("get", key, move || fs::read(&path).map(Bytes::from))
            .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let path = self.path(key)?;
        self.blocking("get_range", key, move || read_range(&path, range.clone()))
            .await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let path = self.path(key)?;
        let owned = key.to_string();
        self.blocking("head", key, move || {
            let meta = fs::metadata(&path)?;
            if !meta.is_file() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
            }
            Ok(ObjectMeta {
                key: owned.clone(),
                size: meta.len(),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let root = Arc::clone(&self.root);
        let prefix_owned = prefix.to_string();
        // Start at the deepest directory the prefix names.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.to_path_buf(),
        };
        self.blocking("list", prefix, move || {
            let mut out = Vec::new();
            list_under(&root, &start, &prefix_owned, &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        self.blocking("delete", key, move || match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }
}
