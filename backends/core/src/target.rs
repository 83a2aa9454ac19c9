//! Where a restore writes: the [`Target`] trait and the filesystem target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::source::{EntryKind, EntryMeta};

/// A file being restored. Bytes land under a temporary name; only `commit` gives the file its
/// real name, so a failed restore never leaves wrong bytes under a restored name. Dropping an
/// uncommitted sink removes the temporary file.
pub trait FileSink: Write + Send {
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Where a restore writes. Paths are relative to the target root. Methods block.
pub trait Target: Send + Sync {
    /// Whether something already exists at `rel`.
    fn exists(&self, rel: &Path) -> io::Result<bool>;
    fn create_dir(&self, rel: &Path) -> io::Result<()>;
    fn create_file(&self, rel: &Path) -> io::Result<Box<dyn FileSink>>;
    fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()>;
    /// Applies owner (where allowed), mode and mtime. Called on a directory after everything
    /// inside it is restored, so its mtime stays.
    fn set_meta(&self, rel: &Path, meta: &EntryMeta) -> io::Result<()>;
}

/// Restores into a directory on a local or mounted filesystem.
#[derive(Debug, Clone)]
pub struct FsTarget {
    root: PathBuf,
    chown: bool,
}

impl FsTarget {
    /// A target rooted at `root` (created when missing). Owners are restored when running as
    /// root, as `tar` does.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let chown = unsafe { libc::geteuid() } == 0;
        Ok(Self { root, chown })
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

struct FsSink {
    temp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl Write for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl FileSink for FsSink {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            drop(file);
            fs::rename(&self.temp, &self.dest)?;
        }
        Ok(())
    }
}

impl Drop for FsSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl Target for FsTarget {
    fn exists(&self, rel: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(self.full(rel)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, rel: &Path) -> io::Result<()> {
        match fs::create_dir(self.full(rel)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.full(rel).is_dir() => Ok(()),
            other => other,
        }
    }

    fn create_file(&self, rel: &Path) -> io::Result<Box<dyn FileSink>> {
        let dest = self.full(rel);
        if dest.file_name().is_none() {
            return Err(io::Error::other("file path has no name"));
        }
        // Short, whatever the name's length: a 255-byte name must restore too.
        let temp = dest.with_file_name(format!(".stowage-restore-{:016x}", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        Ok(Box::new(FsSink {
            temp,
            dest,
            file: Some(file),
        }))
    }

    fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let path = self.full(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => fs::remove_file(&path)?,
            _ => {}
        }
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
    }

    fn set_meta(&self, rel: &Path, meta: &EntryMeta) -> io::Result<()> {
        let path = self.full(rel);
        if self.chown {
            lchown(&path, Some(meta.uid), Some(meta.gid))?;
        }
        let mtime = FileTime::from_unix_time(meta.mtime.secs, meta.mtime.nanos);
        if meta.kind == EntryKind::Symlink {
            return filetime::set_symlink_file_times(&path, mtime, mtime);
        }
        // chmod after chown: chown clears setuid/setgid bits.
        fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode))?;
        filetime::set_file_times(&path, mtime, mtime)
    }
}
