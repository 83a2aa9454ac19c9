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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::retry::retry;
use crate::store::{validate_key, ObjectMeta, Store, StoreError, StoreResult, Upload, TEMP_MARK};

#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
    /// Whether uploads left behind by killed processes were looked for.
    swept: Arc<AtomicBool>,
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
            swept: Arc::default(),
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
            swept: Arc::default(),
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
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!("{TEMP_MARK}{:016x}", rand::random::<u64>()));
    let temp = PathBuf::from(temp_name);
    let mut file = match create_temp(&temp) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs_durably(parent(path)?)?;
            create_temp(&temp)?
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = file.write_all(data) {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    publish(&temp, file, path)
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other("key has no parent"))
}

fn create_temp(temp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
}

/// Makes the temporary file `temp` durable and renames it to `path` (its directory made
/// when missing), then syncs the directory. The temporary file is gone either way.
fn publish(temp: &Path, file: File, path: &Path) -> io::Result<()> {
    let synced = file.sync_all();
    drop(file);
    let renamed = synced.and_then(|()| match fs::rename(temp, path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs_durably(parent(path)?)?;
            fs::rename(temp, path)
        }
        other => other,
    });
    if let Err(e) = renamed {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    File::open(parent(path)?)?.sync_all()
}

/// Uploads are temporary files named so, in the directory of their future key.
const UPLOAD_PREFIX: &str = "upload.stowage-tmp-"; // "upload" + TEMP_MARK
/// An upload not written to for this long belongs to a process that is gone (a pack fills in
/// seconds; a run paused longer than this fails at the rename instead of losing data).
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// Removes the uploads of killed processes (best effort).
fn sweep_uploads(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_UPLOAD);
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(UPLOAD_PREFIX)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A pack written straight to a temporary file in its future directory, renamed into place
/// once its key (its hash) is known.
/// What an upload gathers before writing it to its file.
const UPLOAD_BUFFER: usize = 256 << 10;

struct FileUpload {
    store: String,
    root: Arc<PathBuf>,
    temp: PathBuf,
    /// Buffered: a tree pack is written a few hundred bytes at a time.
    file: Option<io::BufWriter<File>>,
}

#[async_trait]
impl Upload for FileUpload {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(data),
            None => Err(io::Error::other("upload already finished")),
        }
    }

    async fn finish(mut self: Box<Self>, _store: &dyn Store, key: &str) -> StoreResult<()> {
        validate_key(&self.store, key)?;
        let (temp, path) = (self.temp.clone(), self.root.join(key));
        let file = self.file.take();
        let published = tokio::task::spawn_blocking(move || match file {
            Some(file) => publish(&temp, file.into_inner().map_err(|e| e.into_error())?, &path),
            None => Err(io::Error::other("upload already finished")),
        })
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        published.map_err(|e| StoreError::from_io(self.store.clone(), "put", key, e))
    }
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
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
    crate::buffers::filled((end - start) as usize, |buf| file.read_exact_at(buf, start))
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

    async fn start_upload(&self, dir: &str, _size_hint: usize) -> StoreResult<Box<dyn Upload>> {
        // Beside where the object will go: a rename never crosses filesystems.
        validate_key(&self.describe(), dir)?;
        let at = self.root.join(dir);
        let sweep = !self.swept.swap(true, Ordering::Relaxed);
        let temp = at.join(format!("{UPLOAD_PREFIX}{:016x}", rand::random::<u64>()));
        let create = {
            let temp = temp.clone();
            move || {
                if sweep {
                    sweep_uploads(&at);
                }
                match create_temp(&temp) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        create_dirs_durably(&at).and_then(|()| create_temp(&temp))
                    }
                    other => other,
                }
            }
        };
        let file = tokio::task::spawn_blocking(create)
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        match file {
            Ok(file) => Ok(Box::new(FileUpload {
                store: self.describe(),
                root: Arc::clone(&self.root),
                temp,
                file: Some(io::BufWriter::with_capacity(UPLOAD_BUFFER, file)),
            })),
            Err(e) => Err(self.error("put", &format!("{dir}/(new object)"), e)),
        }
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

#[cfg(test)]
mod tests {
    use super::{FsStore, UPLOAD_PREFIX};
    use crate::Store;

    #[tokio::test]
    async fn uploads_of_killed_processes_are_swept_once_a_day_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::create(dir.path()).expect("create");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        let old = dir
            .path()
            .join(format!("data/{UPLOAD_PREFIX}0000000000000001"));
        let recent = dir
            .path()
            .join(format!("data/{UPLOAD_PREFIX}0000000000000002"));
        for path in [&old, &recent] {
            std::fs::write(path, b"part of a pack").expect("write");
        }
        let two_days_ago = filetime::FileTime::from_unix_time(
            filetime::FileTime::now().unix_seconds() - 2 * 24 * 3600,
            0,
        );
        filetime::set_file_mtime(&old, two_days_ago).expect("age it");
        let upload = store.start_upload("data", 0).await.expect("start");
        assert!(!old.exists(), "a day-old upload is removed");
        assert!(recent.exists(), "a recent one may be a running backup's");
        drop(upload);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "the dropped upload is gone: {left:?}");
    }
}
