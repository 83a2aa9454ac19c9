//! A registry stored with the registry's `s3` storage driver, as a backup source.
//!
//! The bucket is listed once when the source opens; directories are implied by the keys
//! (S3 has none, so a restored volume has no empty directories either). Objects have no
//! owner or mode: files read as 0644 and directories as 0755, owned by root. An object's
//! last-modified time is its mtime and ctime, so change detection compares size and
//! last-modified (ETags are not content checksums; registry blobs are verified by digest).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use stowage_backends::source::{EntryKind, EntryMeta, Source, Timestamp};
use tokio::runtime::Handle;

use crate::client::S3Client;
use crate::location::S3Url;
use crate::options::S3Options;

/// Objects under `s3://bucket/rootdirectory`, seen as a directory tree.
pub struct S3Source {
    client: Arc<S3Client>,
    url: S3Url,
    handle: Handle,
    root: EntryMeta,
    /// Every directory (relative path, "" for the root) with its entries sorted by name.
    dirs: BTreeMap<PathBuf, Vec<EntryMeta>>,
}

impl S3Source {
    /// Lists the objects under the URL's prefix. Must be called within the tokio runtime.
    pub async fn open(url: S3Url, options: &S3Options) -> io::Result<Self> {
        let client = S3Client::connect(&url.bucket, options)
            .await
            .map_err(io::Error::other)?;
        let prefix = match url.prefix.is_empty() {
            true => None,
            false => Some(client.path(&url.prefix).map_err(io::Error::other)?),
        };
        let objects: Vec<object_store::ObjectMeta> = {
            let _slot = client.slot().await;
            client
                .objects
                .list(prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| io::Error::other(format!("listing {url}: {e}")))?
        };
        if objects.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{url}: no objects (is this the registry's rootdirectory?)"),
            ));
        }
        let name = url
            .prefix
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(&url.bucket)
            .as_bytes()
            .to_vec();
        let (root, dirs) = build_tree(&url, name, &objects);
        Ok(S3Source {
            client,
            url,
            handle: Handle::current(),
            root,
            dirs,
        })
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        secs: t.timestamp(),
        nanos: t.timestamp_subsec_nanos(),
    }
}

fn dir_meta(name: Vec<u8>, mtime: Timestamp) -> EntryMeta {
    EntryMeta {
        name,
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime,
        ctime: mtime,
        inode: 0,
        symlink_target: None,
    }
}

/// The directory tree the object keys imply; a directory's mtime is its newest object's.
fn build_tree(
    url: &S3Url,
    name: Vec<u8>,
    objects: &[object_store::ObjectMeta],
) -> (EntryMeta, BTreeMap<PathBuf, Vec<EntryMeta>>) {
    let mut files: BTreeMap<PathBuf, Vec<EntryMeta>> = BTreeMap::new();
    let mut dir_times: BTreeMap<PathBuf, Timestamp> = BTreeMap::new();
    for object in objects {
        let Some(rel) = url.relative(object.location.as_ref()) else {
            continue;
        };
        let mtime = timestamp(object.last_modified);
        let rel = Path::new(rel);
        let (Some(parent), Some(file_name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        files
            .entry(parent.to_path_buf())
            .or_default()
            .push(EntryMeta {
                name: file_name.as_encoded_bytes().to_vec(),
                kind: EntryKind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: object.size,
                mtime,
                ctime: mtime,
                inode: 0,
                symlink_target: None,
            });
        for dir in parent.ancestors() {
            let newest = dir_times.entry(dir.to_path_buf()).or_default();
            if (mtime.secs, mtime.nanos) > (newest.secs, newest.nanos) {
                *newest = mtime;
            }
        }
    }
    let mut dirs = files;
    for (dir, mtime) in &dir_times {
        dirs.entry(dir.clone()).or_default();
        if let (Some(parent), Some(dir_name)) = (dir.parent(), dir.file_name()) {
            dirs.entry(parent.to_path_buf())
                .or_default()
                .push(dir_meta(dir_name.as_encoded_bytes().to_vec(), *mtime));
        }
    }
    for entries in dirs.values_mut() {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let root_time = dir_times.get(Path::new("")).copied().unwrap_or_default();
    (dir_meta(name, root_time), dirs)
}

impl Source for S3Source {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn uri(&self) -> String {
        self.url.to_string()
    }

    fn root(&self) -> io::Result<EntryMeta> {
        Ok(self.root.clone())
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<EntryMeta>> {
        self.dirs.get(rel).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no directory {}", self.url, rel.display()),
            )
        })
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + Send>> {
        let key = rel
            .to_str()
            .ok_or_else(|| io::Error::other("object keys are UTF-8"))?;
        let key = self.url.key(key);
        let path = self.client.path(&key).map_err(io::Error::other)?;
        let client = Arc::clone(&self.client);
        let result = crate::block_on(&self.handle, async move {
            let _slot = client.slot().await;
            client.objects.get(&path).await
        })
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => io::Error::new(
                io::ErrorKind::NotFound,
                format!("s3://{}/{key}: gone", self.url.bucket),
            ),
            e => io::Error::other(format!("s3://{}/{key}: {e}", self.url.bucket)),
        })?;
        Ok(Box::new(ObjectReader {
            stream: result.into_stream(),
            pending: Bytes::new(),
            handle: self.handle.clone(),
        }))
    }
}

/// Streams an object's body to synchronous readers.
struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    pending: Bytes,
    handle: Handle,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match crate::block_on(&self.handle, self.stream.next()) {
                Some(chunk) => self.pending = chunk.map_err(io::Error::other)?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
