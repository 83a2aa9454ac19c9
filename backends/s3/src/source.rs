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
use futures::TryStreamExt;
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
        let client = S3Client::connect_checked(&url, options).await?;
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
                .map_err(|e| {
                    io::Error::other(format!("listing {url}: {}", crate::error_chain(&e)))
                })?
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
        let (root, dirs) = build_tree(&url, name, &objects)?;
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
///
/// A key that is also the prefix of other keys (`a/b` beside `a/b/c`) cannot be both a file
/// and a directory: an empty one is a "folder" marker made by a console or a sync tool (its
/// trailing `/` is gone once listed) and is left out; any other is refused.
fn build_tree(
    url: &S3Url,
    name: Vec<u8>,
    objects: &[object_store::ObjectMeta],
) -> io::Result<(EntryMeta, BTreeMap<PathBuf, Vec<EntryMeta>>)> {
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
    for dir in dir_times.keys() {
        let (Some(parent), Some(dir_name)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        let Some(entries) = dirs.get_mut(parent) else {
            continue;
        };
        let dir_name = dir_name.as_encoded_bytes();
        if let Some(at) = entries.iter().position(|e| e.name == dir_name) {
            if entries[at].size != 0 {
                return Err(io::Error::other(format!(
                    "{url}: {} is both an object and a prefix of other objects",
                    dir.display()
                )));
            }
            entries.remove(at);
        }
    }
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
    Ok((dir_meta(name, root_time), dirs))
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
        Ok(Box::new(ObjectReader {
            client: Arc::clone(&self.client),
            name: format!("s3://{}/{key}", self.url.bucket),
            path,
            offset: 0,
            e_tag: None,
            pending: Bytes::new(),
            handle: self.handle.clone(),
        }))
    }
}

/// Reads an object by ranged GETs of [`READ_SIZE`]: each is one request with its own time
/// limit and retries, so a multi-gigabyte layer over a slow link is no single request that
/// must finish within the timeout, and the reader's memory stays bounded.
struct ObjectReader {
    client: Arc<S3Client>,
    name: String,
    path: object_store::path::Path,
    offset: u64,
    /// The first range's ETag: later ranges must come from the same version of the object.
    e_tag: Option<String>,
    pending: Bytes,
    handle: Handle,
}

const READ_SIZE: u64 = 8 << 20;

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let range = self.offset..self.offset + READ_SIZE;
            let client = Arc::clone(&self.client);
            let path = self.path.clone();
            let options = object_store::GetOptions {
                if_match: self.e_tag.clone(),
                ..object_store::GetOptions::default()
            }
            .with_range(Some(range));
            let result = crate::block_on(&self.handle, async move {
                let _slot = client.slot().await;
                let got = client.objects.get_opts(&path, options).await?;
                let e_tag = got.meta.e_tag.clone();
                Ok::<_, object_store::Error>((got.bytes().await?, e_tag))
            });
            self.pending = match result {
                Ok((bytes, e_tag)) => {
                    self.e_tag = self.e_tag.take().or(e_tag);
                    bytes
                }
                Err(object_store::Error::Precondition { .. }) => {
                    return Err(io::Error::other(format!(
                        "{}: the object changed while it was being read",
                        self.name
                    )))
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{}: gone", self.name),
                    ))
                }
                // A range starting at the end of the object: S3 answers 416.
                Err(_) if self.at_end()? => return Ok(0),
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "{}: {}",
                        self.name,
                        crate::error_chain(&e)
                    )))
                }
            };
            if self.pending.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        self.offset += n as u64;
        Ok(n)
    }
}

impl ObjectReader {
    /// Whether the offset is at (or past) the object's end.
    fn at_end(&self) -> io::Result<bool> {
        let client = Arc::clone(&self.client);
        let path = self.path.clone();
        let meta = crate::block_on(
            &self.handle,
            async move { client.objects.head(&path).await },
        )
        .map_err(|e| io::Error::other(format!("{}: {}", self.name, crate::error_chain(&e))))?;
        Ok(self.offset >= meta.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64) -> object_store::ObjectMeta {
        object_store::ObjectMeta {
            location: object_store::path::Path::parse(key).expect("key"),
            last_modified: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            size,
            e_tag: None,
            version: None,
        }
    }

    fn names(entries: &[EntryMeta]) -> Vec<(String, EntryKind)> {
        entries
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind))
            .collect()
    }

    #[test]
    fn keys_make_directories_and_folder_markers_are_dropped() {
        let url = S3Url::parse("s3://bucket/root")
            .expect("s3")
            .expect("valid");
        let objects = [
            object("root/docker", 0), // a console's folder marker
            object("root/docker/registry/v2/blobs/data", 5),
            object("root/docker/registry/v2/repositories/app/link", 3),
            object("rootx/elsewhere", 1),
        ];
        let (root, dirs) = build_tree(&url, b"root".to_vec(), &objects).expect("tree");
        assert_eq!(root.kind, EntryKind::Dir);
        assert_eq!(
            names(&dirs[Path::new("")]),
            [("docker".into(), EntryKind::Dir)]
        );
        assert_eq!(
            names(&dirs[Path::new("docker/registry/v2")]),
            [
                ("blobs".into(), EntryKind::Dir),
                ("repositories".into(), EntryKind::Dir)
            ]
        );
        let blobs = &dirs[Path::new("docker/registry/v2/blobs")];
        assert_eq!(
            (blobs[0].size, blobs[0].mode, blobs[0].mtime.secs),
            (5, 0o644, 1_700_000_000)
        );
        assert!(
            !dirs.keys().any(|d| d.starts_with("elsewhere")),
            "keys outside the prefix"
        );
    }

    #[test]
    fn an_object_that_is_also_a_prefix_is_refused() {
        let url = S3Url::parse("s3://bucket/root")
            .expect("s3")
            .expect("valid");
        let objects = [object("root/a/b", 4), object("root/a/b/c", 1)];
        let err = build_tree(&url, b"root".to_vec(), &objects).expect_err("ambiguous");
        assert!(
            err.to_string()
                .contains("a/b is both an object and a prefix"),
            "{err}"
        );
    }
}
