//! An NFS export as a restore target, written without a mount: the snapshot's top directory
//! becomes the URL's path (`restore <snapshot> --target nfs://host/export` puts a registry
//! volume back where the registry reads it), everything below it is created as in a
//! directory restore. Files are written under a temporary name with WRITEs in flight,
//! COMMITted, and renamed into place; owners are restored when requests are made as root
//! (which the export must not squash).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nfs3_client::nfs3_types::nfs3::{
    ftype3, nfs_fh3, nfstime3, sattr3, set_atime, set_mtime, Nfs3Option,
};
use stowage_backends::block_on;
use stowage_backends::source::{EntryKind, EntryMeta};
use stowage_backends::target::{FileSink, Found, Target};
use tokio::runtime::Handle;

use crate::client::NfsClient;
use crate::url::NfsUrl;
use crate::writer::TempFile;

pub struct NfsTarget {
    client: Arc<NfsClient>,
    handle: Handle,
    /// Handles of directories made or looked up (paths below the URL's path).
    dirs: Mutex<HashMap<PathBuf, nfs_fh3>>,
}

impl NfsTarget {
    /// Mounts the URL's path, which must exist. Must be called within the runtime.
    pub async fn open(url: &NfsUrl) -> io::Result<NfsTarget> {
        let client = NfsClient::connect(url).await?;
        let mut dirs = HashMap::new();
        dirs.insert(PathBuf::new(), client.root.clone());
        Ok(NfsTarget {
            client: Arc::new(client),
            handle: Handle::current(),
            dirs: Mutex::new(dirs),
        })
    }

    /// The path below the URL's: a restored path without its first component.
    fn inner(rel: &Path) -> PathBuf {
        rel.components().skip(1).collect()
    }

    fn what(&self, inner: &Path) -> String {
        self.client.url.join(&inner.to_string_lossy())
    }

    async fn dir(&self, inner: &Path) -> io::Result<nfs_fh3> {
        if let Some(fh) = self.dirs.lock().expect("dir cache").get(inner) {
            return Ok(fh.clone());
        }
        let segments: Vec<&[u8]> = inner.iter().map(|s| s.as_bytes()).collect();
        let fh = self
            .client
            .walk(&self.what(inner), &segments, false)
            .await?;
        self.dirs
            .lock()
            .expect("dir cache")
            .insert(inner.to_path_buf(), fh.clone());
        Ok(fh)
    }

    /// The parent directory's handle and the file name of `inner`.
    async fn parent<'p>(&self, inner: &'p Path) -> io::Result<(nfs_fh3, &'p [u8])> {
        let name = inner
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{}: no file name", inner.display())))?;
        let parent = self.dir(inner.parent().unwrap_or(Path::new(""))).await?;
        Ok((parent, name.as_bytes()))
    }
}

fn nfs_time(secs: i64, nanos: u32) -> nfstime3 {
    nfstime3 {
        seconds: secs.clamp(0, i64::from(u32::MAX)) as u32,
        nseconds: nanos,
    }
}

impl Target for NfsTarget {
    fn list_dir(&self, rel: &Path) -> io::Result<Vec<Found>> {
        let inner = Self::inner(rel);
        block_on(&self.handle, async {
            let dir = self.dir(&inner).await?;
            let entries = self.client.read_dir(&self.what(&inner), &dir).await?;
            Ok(entries
                .into_iter()
                .map(|e| Found {
                    dir: e.attr.type_ == ftype3::NF3DIR,
                    name: e.name,
                })
                .collect())
        })
    }

    fn file_stat(
        &self,
        rel: &Path,
    ) -> io::Result<Option<(u64, stowage_backends::source::Timestamp)>> {
        let inner = Self::inner(rel);
        block_on(&self.handle, async {
            let (parent, name) = match self.parent(&inner).await {
                Ok(found) => found,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match self.client.lookup(&self.what(&inner), &parent, name).await {
                Ok((_, attr)) if attr.type_ == ftype3::NF3REG => {
                    let mtime = stowage_backends::source::Timestamp {
                        secs: i64::from(attr.mtime.seconds),
                        nanos: attr.mtime.nseconds,
                    };
                    Ok(Some((attr.size, mtime)))
                }
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let inner = Self::inner(rel);
        block_on(&self.handle, async {
            let (parent, name) = self.parent(&inner).await?;
            self.client
                .remove_all(&self.what(&inner), &parent, name)
                .await
        })?;
        // Handles of what was removed must not be used again.
        self.dirs
            .lock()
            .expect("dir cache")
            .retain(|path, _| !path.starts_with(&inner));
        Ok(())
    }

    fn exists(&self, rel: &Path) -> io::Result<bool> {
        let inner = Self::inner(rel);
        block_on(&self.handle, async {
            if inner.as_os_str().is_empty() {
                // The export itself always exists: it counts as there once it holds anything.
                let what = self.what(&inner);
                return Ok(!self
                    .client
                    .read_dir(&what, &self.client.root)
                    .await?
                    .is_empty());
            }
            let (parent, name) = match self.parent(&inner).await {
                Ok(found) => found,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            match self.client.lookup(&self.what(&inner), &parent, name).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn create_dir(&self, rel: &Path) -> io::Result<()> {
        let inner = Self::inner(rel);
        if inner.as_os_str().is_empty() {
            return Ok(());
        }
        block_on(&self.handle, async {
            let (parent, name) = self.parent(&inner).await?;
            let what = self.what(&inner);
            let fh = match self.client.mkdir(&what, &parent, name, 0o700).await {
                // A symlink where the snapshot has a directory is replaced, never followed
                // (NFS resolves nothing itself: a write below it would fail, not land
                // outside).
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                    let (_, attr) = self.client.lookup(&what, &parent, name).await?;
                    if attr.type_ != ftype3::NF3LNK {
                        return Err(e);
                    }
                    self.client.remove(&what, &parent, name).await?;
                    self.client.mkdir(&what, &parent, name, 0o700).await?
                }
                other => other?,
            };
            self.dirs
                .lock()
                .expect("dir cache")
                .insert(inner.clone(), fh);
            Ok(())
        })
    }

    fn create_file(&self, rel: &Path) -> io::Result<Box<dyn FileSink>> {
        let inner = Self::inner(rel);
        let what = self.what(&inner);
        block_on(&self.handle, async {
            let (dir, name) = self.parent(&inner).await?;
            let file =
                TempFile::create(&self.client, self.handle.clone(), what, dir.clone()).await?;
            Ok(Box::new(NfsSink {
                file,
                dir,
                name: name.to_vec(),
            }) as Box<dyn FileSink>)
        })
    }

    fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let inner = Self::inner(rel);
        let what = self.what(&inner);
        block_on(&self.handle, async {
            let (parent, name) = self.parent(&inner).await?;
            if let Ok((fh, attr)) = self.client.lookup(&what, &parent, name).await {
                if attr.type_ == ftype3::NF3LNK {
                    if self.client.readlink(&what, &fh).await? == target {
                        return Ok(());
                    }
                    match self.client.remove(&what, &parent, name).await {
                        // Gone already (a repeated request whose first reply was lost).
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        other => other?,
                    }
                }
            }
            match self.client.symlink(&what, &parent, name, target).await {
                // A repeated request whose first one made it: fine if it points right.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let (fh, _) = self.client.lookup(&what, &parent, name).await?;
                    match self.client.readlink(&what, &fh).await? == target {
                        true => Ok(()),
                        false => Err(e),
                    }
                }
                other => other,
            }
        })
    }

    fn set_meta(&self, rel: &Path, meta: &EntryMeta) -> io::Result<()> {
        let inner = Self::inner(rel);
        let what = self.what(&inner);
        block_on(&self.handle, async {
            let fh = match inner.as_os_str().is_empty() {
                true => self.client.root.clone(),
                false => {
                    let (parent, name) = self.parent(&inner).await?;
                    self.client.lookup(&what, &parent, name).await?.0
                }
            };
            let mtime = nfs_time(meta.mtime.secs, meta.mtime.nanos);
            let owner = |attr: sattr3| match self.client.as_root {
                true => sattr3 {
                    uid: Nfs3Option::Some(meta.uid),
                    gid: Nfs3Option::Some(meta.gid),
                    ..attr
                },
                false => attr,
            };
            // A server clears setuid/setgid when an owner change comes with the mode (as
            // chown(2) does): with those bits the owner goes first, on its own.
            let setid = meta.mode & 0o6000 != 0 && meta.kind != EntryKind::Symlink;
            if self.client.as_root && setid {
                self.client
                    .setattr(&what, &fh, owner(sattr3::default()))
                    .await?;
            }
            let attr = sattr3 {
                mode: match meta.kind {
                    EntryKind::Symlink => Nfs3Option::None,
                    _ => Nfs3Option::Some(meta.mode),
                },
                atime: set_atime::SET_TO_CLIENT_TIME(mtime),
                mtime: set_mtime::SET_TO_CLIENT_TIME(mtime),
                ..sattr3::default()
            };
            let attr = match setid {
                true => attr,
                false => owner(attr),
            };
            self.client.setattr(&what, &fh, attr).await
        })
    }
}

/// A file being restored: written under a temporary name, renamed into place by `commit`.
struct NfsSink {
    file: TempFile,
    dir: nfs_fh3,
    name: Vec<u8>,
}

impl Write for NfsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for NfsSink {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.file.complete_blocking(&self.dir, &self.name)
    }
}
