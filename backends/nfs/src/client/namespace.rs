//! The namespace procedures: attributes, lookups, listings, links, creation, removal, renames.

use std::io;

use nfs3_client::nfs3_types::nfs3::{
    self, createhow3, diropargs3, fattr3, ftype3, nfs_fh3, nfsstat3, sattr3, Nfs3Option, Nfs3Result,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use super::errors::ok;
use super::NfsClient;

fn name(name: &[u8]) -> nfs3::filename3<'_> {
    nfs3::filename3(Opaque::borrowed(name))
}

pub(super) fn dirop<'a>(dir: &nfs_fh3, file: &'a [u8]) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: name(file),
    }
}

/// One entry of a directory listing: name, attributes and handle.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: fattr3,
    pub fh: nfs_fh3,
}

impl NfsClient {
    pub async fn getattr(&self, what: &str, fh: &nfs_fh3) -> io::Result<fattr3> {
        let args = nfs3::GETATTR3args { object: fh.clone() };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.getattr(args)))
            .await?;
        ok(reply)
            .map(|r| r.obj_attributes)
            .map_err(|e| self.error(what, e))
    }

    /// The handle and attributes of `file` in `dir`.
    pub async fn lookup(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
    ) -> io::Result<(nfs_fh3, fattr3)> {
        let args = nfs3::LOOKUP3args {
            what: dirop(dir, file),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.lookup(args)))
            .await?;
        let found = ok(reply).map_err(|e| self.error(what, e))?;
        let attr = match found.obj_attributes {
            Nfs3Option::Some(attr) => attr,
            Nfs3Option::None => self.getattr(what, &found.object).await?,
        };
        Ok((found.object, attr))
    }

    /// Every entry of the directory but `.` and `..`, with attributes and handles.
    pub async fn read_dir(&self, what: &str, dir: &nfs_fh3) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        let mut restarted = false;
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf,
                dircount: 64 << 10,
                maxcount: 256 << 10,
            };
            let reply = self
                .call(what, &args, |c, args| Box::pin(c.readdirplus(args)))
                .await?;
            let page = match reply {
                // The directory changed under a long listing: start it again, once.
                Nfs3Result::Err((nfsstat3::NFS3ERR_BAD_COOKIE, _)) if !restarted => {
                    tracing::warn!(
                        what,
                        "the directory changed during the listing (NFS3ERR_BAD_COOKIE); \
                         listing it again"
                    );
                    restarted = true;
                    out.clear();
                    cookie = 0;
                    cookieverf = nfs3::cookieverf3::default();
                    continue;
                }
                reply => ok(reply).map_err(|e| self.error(what, e))?,
            };
            if page.reply.entries.0.is_empty() && !page.reply.eof {
                return Err(self.error(
                    what,
                    io::Error::other("the server returned an empty directory page before the end"),
                ));
            }
            cookieverf = page.cookieverf;
            for entry in page.reply.entries.0 {
                cookie = entry.cookie;
                let entry_name = entry.name.0.into_owned();
                if entry_name == b"." || entry_name == b".." {
                    continue;
                }
                let (fh, attr) = match (entry.name_handle, entry.name_attributes) {
                    (Nfs3Option::Some(fh), Nfs3Option::Some(attr)) => (fh, attr),
                    // The server may leave either out; ask for the entry on its own.
                    _ => match self.lookup(what, dir, &entry_name).await {
                        Ok(found) => found,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    },
                };
                out.push(DirEntry {
                    name: entry_name,
                    attr,
                    fh,
                });
            }
            if page.reply.eof {
                return Ok(out);
            }
        }
    }

    pub async fn readlink(&self, what: &str, fh: &nfs_fh3) -> io::Result<Vec<u8>> {
        let args = nfs3::READLINK3args {
            symlink: fh.clone(),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.readlink(args)))
            .await?;
        ok(reply)
            .map(|r| r.data.0.into_owned())
            .map_err(|e| self.error(what, e))
    }

    /// Creates (or truncates) `file` in `dir` with `mode`. Safe to repeat.
    pub async fn create(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        mode: u32,
    ) -> io::Result<nfs_fh3> {
        let args = nfs3::CREATE3args {
            where_: dirop(dir, file),
            how: createhow3::UNCHECKED(sattr3 {
                mode: Nfs3Option::Some(mode),
                size: Nfs3Option::Some(0),
                ..sattr3::default()
            }),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.create(args)))
            .await?;
        let created = ok(reply).map_err(|e| self.error(what, e))?;
        self.handle_of(what, dir, file, created.obj).await
    }

    /// The handle a CREATE or MKDIR returned, or (servers may leave it out) looked up.
    async fn handle_of(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        returned: Nfs3Option<nfs_fh3>,
    ) -> io::Result<nfs_fh3> {
        match returned {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => Ok(self.lookup(what, dir, file).await?.0),
        }
    }

    /// Creates directory `file` in `dir`, or finds it if it exists (a repeated request, or
    /// another writer first).
    pub async fn mkdir(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        mode: u32,
    ) -> io::Result<nfs_fh3> {
        let args = nfs3::MKDIR3args {
            where_: dirop(dir, file),
            attributes: sattr3 {
                mode: Nfs3Option::Some(mode),
                ..sattr3::default()
            },
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.mkdir(args)))
            .await?;
        match ok(reply) {
            Ok(made) => self.handle_of(what, dir, file, made.obj).await,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let (fh, attr) = self.lookup(what, dir, file).await?;
                match attr.type_ {
                    ftype3::NF3DIR => Ok(fh),
                    _ => Err(self.error(what, io::Error::from(io::ErrorKind::NotADirectory))),
                }
            }
            Err(e) => Err(self.error(what, e)),
        }
    }

    pub async fn symlink(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        target: &[u8],
    ) -> io::Result<()> {
        let args = nfs3::SYMLINK3args {
            where_: dirop(dir, file),
            symlink: nfs3::symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfs3::nfspath3(Opaque::borrowed(target)),
            },
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.symlink(args)))
            .await?;
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Removes `file` from `dir`; `NotFound` when it is not there (also when a repeated
    /// request finds the first one's work done).
    pub async fn remove(&self, what: &str, dir: &nfs_fh3, file: &[u8]) -> io::Result<()> {
        let args = nfs3::REMOVE3args {
            object: dirop(dir, file),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.remove(args)))
            .await?;
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Removes the empty directory `name` from `dir`; `NotFound` when it is not there.
    pub async fn rmdir(&self, what: &str, dir: &nfs_fh3, name: &[u8]) -> io::Result<()> {
        let args = nfs3::RMDIR3args {
            object: dirop(dir, name),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.rmdir(args)))
            .await?;
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Removes `name` from `dir`, and everything under it when it is a directory; a
    /// symlink is removed, never followed.
    pub async fn remove_all(&self, what: &str, dir: &nfs_fh3, name: &[u8]) -> io::Result<()> {
        let (fh, attr) = match self.lookup(what, dir, name).await {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if attr.type_ != ftype3::NF3DIR {
            return match self.remove(what, dir, name).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        // Depth first, one directory at a time: a registry's trees are shallow.
        for entry in self.read_dir(what, &fh).await? {
            Box::pin(self.remove_all(what, &fh, &entry.name)).await?;
        }
        match self.rmdir(what, dir, name).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir`, replacing `to` atomically.
    pub async fn rename(
        &self,
        what: &str,
        (from_dir, from): (&nfs_fh3, &[u8]),
        (to_dir, to): (&nfs_fh3, &[u8]),
    ) -> io::Result<()> {
        let args = nfs3::RENAME3args {
            from: dirop(from_dir, from),
            to: dirop(to_dir, to),
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.rename(args)))
            .await?;
        match ok(reply) {
            Ok(_) => Ok(()),
            // A repeated request whose first one was done: `from` is gone and `to` is there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match self.lookup(what, to_dir, to).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(self.error(what, e)),
                }
            }
            Err(e) => Err(self.error(what, e)),
        }
    }

    pub async fn setattr(&self, what: &str, fh: &nfs_fh3, attr: sattr3) -> io::Result<()> {
        let args = nfs3::SETATTR3args {
            object: fh.clone(),
            new_attributes: attr,
            guard: Nfs3Option::None,
        };
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.setattr(args)))
            .await?;
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Walks `segments` from the root (each must be a directory); with `create`, makes the
    /// missing ones (0700).
    pub async fn walk(&self, what: &str, segments: &[&[u8]], create: bool) -> io::Result<nfs_fh3> {
        let mut fh = self.root.clone();
        for segment in segments {
            fh = match self.lookup(what, &fh, segment).await {
                Ok((found, attr)) if attr.type_ == ftype3::NF3DIR => found,
                Ok(_) => {
                    return Err(self.error(what, io::Error::from(io::ErrorKind::NotADirectory)))
                }
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    self.mkdir(what, &fh, segment, 0o700).await?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(fh)
    }
}
