//! A repository on an NFS export, reached without a mount.
//!
//! Objects are files under the URL's path, laid out as in a directory store. A `put` writes a
//! temporary file beside the key (parallel UNSTABLE writes), COMMITs it, checks that the
//! server did not restart in between (write verifiers), and RENAMEs it over the key: readers
//! see no object or the whole object, and once `put` returns it is on the server's stable
//! storage (NFSv3 servers complete CREATE, MKDIR and RENAME on stable storage before they
//! reply). Directory handles are cached; they stay valid across server restarts.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nfs3_client::nfs3_types::nfs3::{ftype3, nfs_fh3};
use stowage_backends::store::{
    validate_key, ObjectMeta, Store, StoreError, StoreResult, Upload, TEMP_MARK,
};
use tokio::runtime::Handle;

use crate::client::{is_server_restarted, NfsClient};
use crate::url::NfsUrl;
use crate::writer::TempFile;

#[derive(Debug)]
pub struct NfsStore {
    client: Arc<NfsClient>,
    handle: Handle,
    /// Handles of directories (relative paths) already looked up or made.
    dirs: Mutex<HashMap<String, nfs_fh3>>,
}

impl NfsStore {
    /// The store at the URL's path, which must exist.
    pub async fn open(url: &NfsUrl) -> io::Result<NfsStore> {
        Ok(NfsStore {
            client: Arc::new(NfsClient::connect(url).await?),
            handle: Handle::current(),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    /// The store at the URL's path, made (0700) when missing.
    pub async fn create(url: &NfsUrl) -> io::Result<NfsStore> {
        let mut parent = url.clone();
        let segments: Vec<String> = url.segments().iter().map(|s| s.to_string()).collect();
        // Find the deepest existing ancestor, then make the rest below it.
        for keep in (0..=segments.len()).rev() {
            parent.path = format!("/{}", segments[..keep].join("/"));
            match NfsClient::connect(&parent).await {
                Ok(client) => {
                    let rest: Vec<&[u8]> = segments[keep..].iter().map(|s| s.as_bytes()).collect();
                    client.walk(&url.to_string(), &rest, true).await?;
                    return Self::open(url).await;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && keep > 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Self::open(url).await
    }

    fn error(&self, op: &'static str, key: &str, e: io::Error) -> StoreError {
        StoreError::from_io(self.describe(), op, key, e)
    }

    /// Runs `op`, and once more with the directory handles looked up afresh if a cached one
    /// went stale (the directory was removed and made again by someone else): the server
    /// says ESTALE, or, for a write into the removed directory, NOENT (`writing`).
    async fn fresh<T, F, Fut>(&self, writing: bool, op: F) -> io::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = io::Result<T>>,
    {
        match op().await {
            Err(e)
                if e.raw_os_error() == Some(libc::ESTALE)
                    || (writing && e.kind() == io::ErrorKind::NotFound) =>
            {
                tracing::warn!(
                    store = %self.client.url,
                    error = %e,
                    "a cached directory handle went stale; retrying with fresh lookups"
                );
                self.dirs.lock().expect("dir cache").clear();
                op().await
            }
            other => other,
        }
    }

    /// The handle of directory `dir` (a relative path, "" for the root).
    async fn dir(&self, dir: &str, create: bool) -> io::Result<nfs_fh3> {
        if dir.is_empty() {
            return Ok(self.client.root.clone());
        }
        if let Some(fh) = self.dirs.lock().expect("dir cache").get(dir) {
            return Ok(fh.clone());
        }
        let segments: Vec<&[u8]> = dir.split('/').map(str::as_bytes).collect();
        let fh = self
            .client
            .walk(&self.client.url.join(dir), &segments, create)
            .await?;
        self.dirs
            .lock()
            .expect("dir cache")
            .insert(dir.to_string(), fh.clone());
        Ok(fh)
    }

    /// A key's directory handle and file name.
    async fn parent<'k>(&self, key: &'k str, create: bool) -> io::Result<(nfs_fh3, &'k str)> {
        let (dir, file) = key.rsplit_once('/').unwrap_or(("", key));
        Ok((self.dir(dir, create).await?, file))
    }

    /// A regular file's handle and size.
    async fn file(&self, key: &str) -> io::Result<(nfs_fh3, u64)> {
        let (dir, file) = self.parent(key, false).await?;
        let (fh, attr) = self
            .client
            .lookup(&self.client.url.join(key), &dir, file.as_bytes())
            .await?;
        match attr.type_ {
            ftype3::NF3REG => Ok((fh, attr.size)),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "not a file")),
        }
    }

    async fn put_file(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let what = self.client.url.join(key);
        let (dir, file) = self.parent(key, true).await?;
        let mut temp =
            TempFile::create(&self.client, self.handle.clone(), what, dir.clone()).await?;
        temp.write_whole(data).await?;
        temp.complete(&dir, file.as_bytes()).await
    }

    async fn list_files(&self, prefix: &str) -> io::Result<Vec<ObjectMeta>> {
        // Start at the deepest directory the prefix names.
        let start = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let fh = match self.dir(start, false).await {
            Ok(fh) => fh,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut level = vec![(start.to_string(), fh)];
        while !level.is_empty() {
            // The directories of one level are read in parallel.
            let listings: Vec<(String, Vec<crate::client::DirEntry>)> =
                futures::stream::iter(level.drain(..))
                    .map(|(dir, fh)| async move {
                        let what = self.client.url.join(&dir);
                        match self.client.read_dir(&what, &fh).await {
                            Ok(entries) => Ok((dir, entries)),
                            // Removed while listing: nothing below it.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((dir, Vec::new())),
                            Err(e) => Err(e),
                        }
                    })
                    .buffer_unordered(self.client.connections)
                    .try_collect()
                    .await?;
            for (dir, entries) in listings {
                for entry in entries {
                    let Ok(name) = std::str::from_utf8(&entry.name) else {
                        continue;
                    };
                    if name.contains(TEMP_MARK) {
                        continue;
                    }
                    let key = match dir.is_empty() {
                        true => name.to_string(),
                        false => format!("{dir}/{name}"),
                    };
                    match entry.attr.type_ {
                        ftype3::NF3DIR => {
                            // Descend only where keys below can still match the prefix.
                            let as_dir = format!("{key}/");
                            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                                level.push((key, entry.fh));
                            }
                        }
                        ftype3::NF3REG if key.starts_with(prefix) => out.push(ObjectMeta {
                            key,
                            size: entry.attr.size,
                        }),
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for NfsStore {
    fn describe(&self) -> String {
        self.client.url.to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        validate_key(&self.describe(), key)?;
        let mut attempt = 1;
        loop {
            match self.fresh(true, || self.put_file(key, &data)).await {
                // The server restarted before the data was stable: write it again.
                Err(e) if is_server_restarted(&e) && attempt < 3 => {
                    tracing::warn!(
                        store = %self.client.url,
                        key,
                        attempt,
                        error = %e,
                        "the NFS server restarted before the object was stable; writing it again"
                    );
                    attempt += 1;
                }
                other => return other.map_err(|e| self.error("put", key, e)),
            }
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        validate_key(&self.describe(), key)?;
        let read = || async {
            let (fh, size) = self.file(key).await?;
            let what = self.client.url.join(key);
            self.client.read_range(&what, &fh, 0, size).await
        };
        self.fresh(false, read)
            .await
            .map_err(|e| self.error("get", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        validate_key(&self.describe(), key)?;
        let read = || async {
            let (fh, size) = self.file(key).await?;
            let end = range.end.min(size);
            let what = self.client.url.join(key);
            self.client
                .read_range(&what, &fh, range.start.min(end), end)
                .await
        };
        self.fresh(false, read)
            .await
            .map_err(|e| self.error("get_range", key, e))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        validate_key(&self.describe(), key)?;
        match self.fresh(false, || self.file(key)).await {
            Ok((_, size)) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
            }),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        // A stale directory handle (the directory made again) is looked up afresh.
        self.fresh(false, || self.list_files(prefix))
            .await
            .map_err(|e| self.error("list", prefix, e))
    }

    /// Packs are written to a temporary file in `dir` as they are produced (WRITEs in
    /// flight), then COMMITted and renamed into place: no pack is held in memory.
    async fn start_upload(&self, dir: &str, _size_hint: usize) -> StoreResult<Box<dyn Upload>> {
        validate_key(&self.describe(), dir)?;
        let what = self.client.url.join(dir);
        let create = async {
            let fh = self.dir(dir, true).await?;
            TempFile::create(&self.client, self.handle.clone(), what, fh).await
        };
        let file = create
            .await
            .map_err(|e| self.error("put", &format!("{dir}/(new object)"), e))?;
        Ok(Box::new(NfsUpload {
            file,
            client: Arc::clone(&self.client),
            store: self.describe(),
        }))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        validate_key(&self.describe(), key)?;
        let remove = || async {
            let (dir, file) = self.parent(key, false).await?;
            self.client
                .remove(&self.client.url.join(key), &dir, file.as_bytes())
                .await
        };
        match self.fresh(false, remove).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }
}

/// A streamed upload to an NFS store (see [`NfsStore::start_upload`]).
struct NfsUpload {
    file: TempFile,
    client: Arc<NfsClient>,
    store: String,
}

#[async_trait]
impl Upload for NfsUpload {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.append(data)
    }

    async fn finish(mut self: Box<Self>, _store: &dyn Store, key: &str) -> StoreResult<()> {
        validate_key(&self.store, key)?;
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let segments: Vec<&[u8]> = dir
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
            .collect();
        let what = self.client.url.join(key);
        let done = async {
            let fh = self.client.walk(&what, &segments, true).await?;
            self.file.complete(&fh, name.as_bytes()).await
        };
        done.await
            .map_err(|e| StoreError::from_io(self.store.clone(), "put", key, e))
    }
}
