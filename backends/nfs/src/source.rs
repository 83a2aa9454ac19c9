//! A registry volume on an NFS export as a backup source, read without a mount.
//!
//! Listings are READDIRPLUS (names, attributes and handles in one round trip); files are read
//! with several READs in flight. Attributes come from the server as they are: mode, owner,
//! size, mtime and ctime, and the file id as the inode number, all stable across server
//! restarts, so change detection works as on a local disk.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nfs3_client::nfs3_types::nfs3::{fattr3, ftype3, nfs_fh3, nfstime3};
use stowage_backends::block_on;
use stowage_backends::source::{EntryKind, EntryMeta, Source, Timestamp};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::client::NfsClient;
use crate::url::NfsUrl;

/// READs kept in flight per open file.
const READ_AHEAD: usize = 4;

pub struct NfsSource {
    client: Arc<NfsClient>,
    handle: Handle,
    root: EntryMeta,
    /// Handles of the directories listed so far (relative paths), for lookups below them.
    dirs: Mutex<HashMap<PathBuf, nfs_fh3>>,
}

impl NfsSource {
    /// Mounts the URL's path, which must be a directory. Must be called within the runtime.
    pub async fn open(url: &NfsUrl) -> io::Result<NfsSource> {
        let client = NfsClient::connect(url).await?;
        let attr = client.getattr(&url.to_string(), &client.root).await?;
        if attr.type_ != ftype3::NF3DIR {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{url} is not a directory"),
            ));
        }
        let name = url.segments().last().unwrap_or(&"root").as_bytes().to_vec();
        let root = entry_meta(name, &attr, None);
        let mut dirs = HashMap::new();
        dirs.insert(PathBuf::new(), client.root.clone());
        Ok(NfsSource {
            client: Arc::new(client),
            handle: Handle::current(),
            root,
            dirs: Mutex::new(dirs),
        })
    }

    fn what(&self, rel: &Path) -> String {
        self.client.url.join(&rel.to_string_lossy())
    }

    /// The handle of a directory: from the listing of its parent, else looked up.
    async fn dir(&self, rel: &Path) -> io::Result<nfs_fh3> {
        if let Some(fh) = self.dirs.lock().expect("dir cache").get(rel) {
            return Ok(fh.clone());
        }
        let segments: Vec<&[u8]> = rel.iter().map(|s| s.as_bytes()).collect();
        self.client.walk(&self.what(rel), &segments, false).await
    }
}

fn timestamp(t: nfstime3) -> Timestamp {
    Timestamp {
        secs: i64::from(t.seconds),
        nanos: t.nseconds,
    }
}

fn entry_meta(name: Vec<u8>, attr: &fattr3, symlink_target: Option<Vec<u8>>) -> EntryMeta {
    let kind = match attr.type_ {
        ftype3::NF3REG => EntryKind::File,
        ftype3::NF3DIR => EntryKind::Dir,
        ftype3::NF3LNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    EntryMeta {
        name,
        kind,
        mode: attr.mode & 0o7777,
        uid: attr.uid,
        gid: attr.gid,
        size: if kind == EntryKind::File {
            attr.size
        } else {
            0
        },
        mtime: timestamp(attr.mtime),
        ctime: timestamp(attr.ctime),
        inode: attr.fileid,
        symlink_target,
    }
}

/// A stale handle means the file or directory was removed since it was listed (registry
/// garbage collection during the backup): to the backup, as good as not found.
fn vanished(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ESTALE) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        _ => e,
    }
}

impl Source for NfsSource {
    fn kind(&self) -> &'static str {
        "nfs"
    }

    fn uri(&self) -> String {
        self.client.url.to_string()
    }

    fn root(&self) -> io::Result<EntryMeta> {
        Ok(self.root.clone())
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<EntryMeta>> {
        self.list(rel).map_err(vanished)
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>> {
        self.open_file(rel).map_err(vanished)
    }
}

impl NfsSource {
    fn list(&self, rel: &Path) -> io::Result<Vec<EntryMeta>> {
        block_on(&self.handle, async {
            let what = self.what(rel);
            let dir = self.dir(rel).await?;
            let listed = self.client.read_dir(&what, &dir).await?;
            let mut entries = Vec::with_capacity(listed.len());
            let mut subdirs = Vec::new();
            for entry in listed {
                let target = match entry.attr.type_ {
                    ftype3::NF3LNK => {
                        let link = rel.join(std::ffi::OsStr::from_bytes(&entry.name));
                        match self.client.readlink(&self.what(&link), &entry.fh).await {
                            Ok(target) => Some(target),
                            // Removed since the listing: not part of this backup.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    ftype3::NF3DIR => {
                        subdirs.push((
                            rel.join(std::ffi::OsStr::from_bytes(&entry.name)),
                            entry.fh.clone(),
                        ));
                        None
                    }
                    _ => None,
                };
                entries.push(entry_meta(entry.name, &entry.attr, target));
            }
            self.dirs.lock().expect("dir cache").extend(subdirs);
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
    }

    fn open_file(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>> {
        let what = self.what(rel);
        let (fh, size) = block_on(&self.handle, async {
            let parent = self.dir(rel.parent().unwrap_or(Path::new(""))).await?;
            let file = rel
                .file_name()
                .ok_or_else(|| io::Error::other("no file name"))?;
            let (fh, attr) = self.client.lookup(&what, &parent, file.as_bytes()).await?;
            match attr.type_ {
                ftype3::NF3REG => Ok((fh, attr.size)),
                _ => Err(io::Error::other(format!("{what}: not a regular file"))),
            }
        })?;
        Ok(Box::new(NfsReader {
            client: Arc::clone(&self.client),
            handle: self.handle.clone(),
            what,
            fh,
            size,
            next_offset: 0,
            in_flight: VecDeque::new(),
            current: Bytes::new(),
            done: false,
        }))
    }
}

/// A READ sent: its offset, its length, and the task that answers it (data, end of file).
type PendingRead = (u64, u32, JoinHandle<io::Result<(Bytes, bool)>>);

/// A file read front to back with up to [`READ_AHEAD`] READs in flight.
struct NfsReader {
    client: Arc<NfsClient>,
    handle: Handle,
    what: String,
    fh: nfs_fh3,
    /// The file's size when it was opened.
    size: u64,
    /// Where the next READ to be sent starts.
    next_offset: u64,
    /// READs sent, in file order: their offset and the task that answers them.
    in_flight: VecDeque<PendingRead>,
    current: Bytes,
    done: bool,
}

impl NfsReader {
    fn send(&mut self) {
        // Up to the size the file had when opened, then one READ at a time until EOF.
        while self.in_flight.len() < READ_AHEAD
            && (self.next_offset < self.size || self.in_flight.is_empty())
        {
            let (client, fh, what) = (Arc::clone(&self.client), self.fh.clone(), self.what.clone());
            let (offset, count) = (self.next_offset, self.client.rsize);
            let task = self
                .handle
                .spawn(async move { client.read(&what, &fh, offset, count).await });
            self.in_flight.push_back((offset, count, task));
            self.next_offset += u64::from(count);
        }
    }

    /// Forgets the READs in flight (their answers would be at the wrong offsets). They run to
    /// the end in the background: a request cut off half-way would cost its connection.
    fn cancel(&mut self) {
        self.in_flight.clear();
    }

    fn refill(&mut self) -> io::Result<()> {
        self.send();
        let (offset, count, task) = self.in_flight.pop_front().expect("reads were just sent");
        let (data, eof) = block_on(&self.handle, task)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.what)))?
            .map_err(vanished)?;
        if eof || data.is_empty() {
            self.done = true;
            self.cancel();
        } else if data.len() < count as usize {
            // A short read: continue right after it.
            self.cancel();
            self.next_offset = offset + data.len() as u64;
        }
        self.current = data;
        Ok(())
    }
}

impl Read for NfsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
