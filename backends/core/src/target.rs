//! Where a restore writes: the [`Target`] trait and the filesystem target.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec};
use rustix::fs::{Timestamps, Uid};
use rustix::io::Errno;

use crate::source::{EntryKind, EntryMeta};

/// A file being restored. Bytes land under a temporary name; only `commit` gives the file its
/// real name, so a failed restore never leaves wrong bytes under a restored name. Dropping an
/// uncommitted sink removes the temporary file.
pub trait FileSink: Write + Send {
    fn commit(self: Box<Self>) -> io::Result<()>;
    /// Leaves the next `len` bytes a hole (they read as zeros, and take no space) instead
    /// of writing them. False when the target cannot: the caller writes the zeros.
    fn skip(&mut self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
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
    /// What the directory `rel` holds, for `restore --delete`; `NotFound` when it does not
    /// exist. Targets that cannot list say so (`Unsupported`).
    fn list_dir(&self, rel: &Path) -> io::Result<Vec<Found>> {
        Err(unsupported(rel, "list"))
    }
    /// Removes `rel` and, for a directory, everything under it, following no symlink.
    fn remove_all(&self, rel: &Path) -> io::Result<()> {
        Err(unsupported(rel, "delete"))
    }
    /// The size and mtime of the regular file at `rel`, following no symlink; none when
    /// nothing, or something else, is there, or the target cannot tell (`restore
    /// --skip-existing` then writes the file).
    fn file_stat(&self, rel: &Path) -> io::Result<Option<(u64, crate::source::Timestamp)>> {
        let _ = rel;
        Ok(None)
    }
}

/// An entry of a target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: Vec<u8>,
    /// A directory (not a symlink to one).
    pub dir: bool,
}

fn unsupported(rel: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{}: this target cannot {what} what it holds", rel.display()),
    )
}

/// Restores into a directory on a local or mounted filesystem.
///
/// The root is opened once; every path below it is resolved from there without following
/// a symlink (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`, or one `O_NOFOLLOW`
/// directory at a time where the kernel lacks it), and every operation is relative to the
/// directory so opened. A restore therefore never writes through a symlink it did not
/// create: a symlink standing where the snapshot has a directory is replaced by the
/// directory, and one standing where it has a file or a symlink is replaced by that.
/// Directories are created 0700 and get their own mode only when their contents are done.
#[derive(Debug, Clone)]
pub struct FsTarget {
    root: PathBuf,
    root_dir: Arc<OwnedFd>,
    chown: bool,
}

impl FsTarget {
    /// A target rooted at `root` (created when missing). Owners are restored when running as
    /// root, as `tar` does. The root itself may be reached through symlinks: it is the
    /// caller's choice.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let root_dir = rfs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let chown = unsafe { libc::geteuid() } == 0;
        Ok(Self {
            root,
            root_dir: Arc::new(root_dir),
            chown,
        })
    }

    /// The directory holding `rel`, opened without following a symlink, and `rel`'s name.
    fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no name"))?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        let opened = open_beneath(&self.root_dir, dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => e,
            _ if e.raw_os_error() == Some(libc::ELOOP)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                io::Error::other(format!(
                    "{} under {} is not a directory (a symlink or a file stands in the \
                     path); the restore does not write through it",
                    dir.display(),
                    self.root.display()
                ))
            }
            _ => e,
        })?;
        Ok((opened, name))
    }
}

const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// Opens directory `rel` below `root`, following no symlink and never leaving `root`.
fn open_beneath(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let path = match rel.as_os_str().is_empty() {
        true => Path::new("."),
        false => rel,
    };
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH;
    loop {
        match rfs::openat2(
            root,
            path,
            DIR_FLAGS | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve,
        ) {
            // A rename elsewhere on the filesystem raced the lookup: try again.
            Err(Errno::AGAIN) => continue,
            // Kernels before 5.6, or a sandbox that filters the call.
            Err(Errno::NOSYS) | Err(Errno::PERM) => return open_stepwise(root, rel),
            other => return other.map_err(io::Error::from),
        }
    }
}

/// [`open_beneath`] one directory at a time, each opened with `O_NOFOLLOW`.
fn open_stepwise(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut dir = rfs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} leaves the target", rel.display()),
            ));
        };
        dir = rfs::openat(&dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    }
    Ok(dir)
}

/// What stands at `name` in `dir`, not following a symlink; `None` when nothing does.
/// The entries of the directory `dir` (opened with `O_PATH` or not) but `.` and `..`.
fn entries(dir: &OwnedFd) -> io::Result<Vec<Found>> {
    let readable = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut found = Vec::new();
    for entry in rfs::Dir::read_from(&readable)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                kind_at(&readable, OsStr::from_bytes(name))? == Some(FileType::Directory)
            }
            _ => false,
        };
        found.push(Found {
            name: name.to_vec(),
            dir,
        });
    }
    Ok(found)
}

/// Removes `name` in `dir`, and everything under it when it is a directory, following no
/// symlink.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let inner = rfs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
            for entry in entries(&inner)? {
                remove_at(&inner, OsStr::from_bytes(&entry.name))?;
            }
            Ok(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
        }
        Some(_) => Ok(rfs::unlinkat(dir, name, AtFlags::empty())?),
    }
}

fn kind_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

struct FsSink {
    dir: OwnedFd,
    temp: OsString,
    name: OsString,
    file: Option<File>,
    /// The file ends in a hole: its length is set at commit.
    hole_at_end: bool,
}

impl Write for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hole_at_end = false;
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
        if let Some(mut file) = self.file.take() {
            if self.hole_at_end {
                let len = file.stream_position()?;
                file.set_len(len)?;
            }
            drop(file);
            // Replaces whatever stands at the name, a symlink included, without following it.
            rfs::renameat(&self.dir, &self.temp, &self.dir, &self.name)?;
        }
        Ok(())
    }

    fn skip(&mut self, len: u64) -> io::Result<bool> {
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("file already committed"));
        };
        let len = i64::try_from(len).map_err(|_| io::Error::other("hole too large"))?;
        file.seek(io::SeekFrom::Current(len))?;
        self.hole_at_end = true;
        Ok(true)
    }
}

impl Drop for FsSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = rfs::unlinkat(&self.dir, &self.temp, AtFlags::empty());
        }
    }
}

impl Target for FsTarget {
    fn exists(&self, rel: &Path) -> io::Result<bool> {
        let (dir, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(kind_at(&dir, name)?.is_some())
    }

    fn create_dir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        match kind_at(&dir, name)? {
            Some(FileType::Directory) => return Ok(()),
            Some(FileType::Symlink) => rfs::unlinkat(&dir, name, AtFlags::empty())?,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: a file stands where the snapshot has a directory",
                        rel.display()
                    ),
                ))
            }
            None => {}
        }
        match rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            // Another writer made it meanwhile: fine if it is a directory.
            Err(Errno::EXIST) if kind_at(&dir, name)? == Some(FileType::Directory) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }

    fn create_file(&self, rel: &Path) -> io::Result<Box<dyn FileSink>> {
        let (dir, name) = self.parent(rel)?;
        // Short, whatever the name's length: a 255-byte name must restore too.
        let temp = OsString::from(format!(".stowage-restore-{:016x}", rand::random::<u64>()));
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = File::from(rfs::openat(&dir, &temp, flags, Mode::from_raw_mode(0o600))?);
        Ok(Box::new(FsSink {
            dir,
            temp,
            name: name.to_os_string(),
            file: Some(file),
            hole_at_end: false,
        }))
    }

    fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        if kind_at(&dir, name)? == Some(FileType::Symlink) {
            rfs::unlinkat(&dir, name, AtFlags::empty())?;
        }
        rfs::symlinkat(OsStr::from_bytes(target), &dir, name)?;
        Ok(())
    }

    fn list_dir(&self, rel: &Path) -> io::Result<Vec<Found>> {
        entries(&open_beneath(&self.root_dir, rel)?)
    }

    fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        remove_at(&dir, name)
    }

    fn file_stat(&self, rel: &Path) -> io::Result<Option<(u64, crate::source::Timestamp)>> {
        let (dir, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
                let mtime = crate::source::Timestamp {
                    secs: stat.st_mtime,
                    nanos: stat.st_mtime_nsec as u32,
                };
                Ok(Some((stat.st_size as u64, mtime)))
            }
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set_meta(&self, rel: &Path, meta: &EntryMeta) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let is_symlink = kind_at(&dir, name)? == Some(FileType::Symlink);
        if is_symlink != (meta.kind == EntryKind::Symlink) {
            return Err(io::Error::other(format!(
                "{}: something else replaced what the restore wrote there",
                rel.display()
            )));
        }
        if self.chown {
            let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
            rfs::chownat(&dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        // chmod after chown: chown clears setuid/setgid bits. Symlinks have no mode of their
        // own; the check above makes sure this one follows none.
        if !is_symlink {
            rfs::chmodat(&dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())?;
        }
        let time = Timespec {
            tv_sec: meta.mtime.secs,
            tv_nsec: meta.mtime.nanos.into(),
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rfs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }
}
