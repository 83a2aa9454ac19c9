//! Where registry data is read from: the [`Source`] trait and the filesystem source
//! (local disk or an NFS mount; transient NFS errors are retried, see [`crate::retry`]).

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::retry::{retry, Reopening};

/// What kind of entry a directory listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Sockets, fifos, devices: reported so the engine can warn, never backed up.
    Other,
}

/// A timestamp as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// One entry of a directory listing with the metadata a restore needs and what change
/// detection compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The entry's file name (raw bytes; not necessarily UTF-8).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub inode: u64,
    pub symlink_target: Option<Vec<u8>>,
}

/// Where a backup reads from. Methods block; the engine calls them from worker threads.
pub trait Source: Send + Sync {
    /// Kind (`fs`) and location (an absolute path or URL), recorded in the snapshot.
    fn kind(&self) -> &'static str;
    fn uri(&self) -> String;
    /// The backed-up directory itself (its name and metadata).
    fn root(&self) -> io::Result<EntryMeta>;
    /// The entries of the directory at `rel` (relative to the root), sorted by name.
    fn read_dir(&self, rel: &Path) -> io::Result<Vec<EntryMeta>>;
    /// Opens the file at `rel` for reading.
    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>>;
}

/// A directory tree on a local or mounted filesystem.
#[derive(Debug, Clone)]
pub struct FsSource {
    root: PathBuf,
}

impl FsSource {
    /// The source rooted at `root`, which must be a directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = fs::canonicalize(root.as_ref())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.as_ref().display())))?;
        if !fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root })
    }

    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// Reads an entry's metadata without following a final symlink.
pub fn entry_meta(path: &Path, name: Vec<u8>) -> io::Result<EntryMeta> {
    entry_meta_from(&fs::symlink_metadata(path)?, || path.to_path_buf(), name)
}

/// [`entry_meta`] from metadata already read (`path` is asked for only to read a symlink's
/// target: most entries are not symlinks, and a path for each costs an allocation).
fn entry_meta_from(
    meta: &fs::Metadata,
    path: impl FnOnce() -> PathBuf,
    name: Vec<u8>,
) -> io::Result<EntryMeta> {
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    let symlink_target = match kind {
        EntryKind::Symlink => Some(fs::read_link(path())?.as_os_str().as_bytes().to_vec()),
        _ => None,
    };
    Ok(EntryMeta {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        mtime: Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            secs: meta.ctime(),
            nanos: meta.ctime_nsec() as u32,
        },
        inode: meta.ino(),
        symlink_target,
    })
}

/// The entries of `dir`, sorted by name.
fn list(dir: &Path) -> io::Result<Vec<EntryMeta>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().as_bytes().to_vec();
        // `DirEntry::metadata` is an lstat relative to the open directory: no walk of
        // the whole path per entry.
        match entry
            .metadata()
            .and_then(|meta| entry_meta_from(&meta, || entry.path(), name))
        {
            Ok(meta) => entries.push(meta),
            // Removed between the listing and the lstat (registry GC, an upload
            // finishing): it is simply not part of this backup.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

impl Source for FsSource {
    fn kind(&self) -> &'static str {
        "fs"
    }

    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn root(&self) -> io::Result<EntryMeta> {
        let name = self
            .root
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"root".to_vec());
        entry_meta(&self.root, name)
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<EntryMeta>> {
        let dir = self.full(rel);
        // The whole listing again on a stale handle or a soft mount's error (NFS).
        retry(&dir, "read_dir", || list(&dir))
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>> {
        let path = self.full(rel);
        let reopen = path.clone();
        Ok(Box::new(Reopening::new(&path, move || {
            fs::File::open(&reopen)
        })?))
    }
}
