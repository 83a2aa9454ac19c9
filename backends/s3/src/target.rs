//! A bucket as a restore target: the snapshot's top directory becomes the URL's prefix and
//! every file an object (`restore <snapshot> --target s3://bucket/rootdirectory` puts a
//! registry back where the registry's `s3` driver reads it).

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutPayload};
use stowage_backends::source::EntryMeta;
use stowage_backends::target::{FileSink, Found, Target};
use tokio::runtime::Handle;

use crate::client::S3Client;
use crate::location::S3Url;
use crate::options::S3Options;

pub struct S3Target {
    client: Arc<S3Client>,
    url: S3Url,
    handle: Handle,
}

impl S3Target {
    /// Must be called within the tokio runtime.
    pub async fn open(url: S3Url, options: &S3Options) -> io::Result<Self> {
        let client = S3Client::connect_checked(&url, options).await?;
        Ok(S3Target {
            client,
            url,
            handle: Handle::current(),
        })
    }

    /// The key of a restored path: its first component (the backed-up directory) is the
    /// prefix itself.
    fn key(&self, rel: &Path) -> io::Result<String> {
        let mut parts = Vec::new();
        for part in rel.components().skip(1) {
            parts.push(part.as_os_str().to_str().ok_or_else(|| {
                io::Error::other(format!("{}: object keys must be UTF-8", rel.display()))
            })?);
        }
        Ok(self.url.key(&parts.join("/")))
    }

    /// The object path of `rel` as a listing prefix: none for the bucket's root.
    fn prefix(&self, rel: &Path) -> io::Result<Option<object_store::path::Path>> {
        match self.key(rel)?.is_empty() {
            true => Ok(None),
            false => self.path(rel).map(Some),
        }
    }

    fn path(&self, rel: &Path) -> io::Result<object_store::path::Path> {
        let key = self.key(rel)?;
        self.client
            .path(&key)
            .map_err(|e| io::Error::other(format!("s3://{}/{key}: {e}", self.url.bucket)))
    }
}

impl Target for S3Target {
    fn exists(&self, rel: &Path) -> io::Result<bool> {
        let prefix = self.prefix(rel)?;
        let client = Arc::clone(&self.client);
        // Anything under the key counts: restoring over an existing registry needs --overwrite.
        crate::block_on(&self.handle, async move {
            let _slot = client.slot().await;
            if let Some(path) = &prefix {
                match client.objects.head(path).await {
                    Ok(_) => return Ok(true),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io::Error::other(crate::error_chain(&e))),
                }
            }
            match client.objects.list(prefix.as_ref()).next().await {
                None => Ok(false),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(io::Error::other(crate::error_chain(&e))),
            }
        })
    }

    fn create_dir(&self, _rel: &Path) -> io::Result<()> {
        Ok(()) // S3 has no directories: they exist through their objects.
    }

    fn create_file(&self, rel: &Path) -> io::Result<Box<dyn FileSink>> {
        Ok(Box::new(ObjectSink {
            client: Arc::clone(&self.client),
            path: self.path(rel)?,
            handle: self.handle.clone(),
            buffer: Vec::new(),
            upload: None,
        }))
    }

    fn symlink(&self, rel: &Path, _target: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: a bucket cannot hold symlinks; restore to a directory",
                rel.display()
            ),
        ))
    }

    fn set_meta(&self, _rel: &Path, _meta: &EntryMeta) -> io::Result<()> {
        Ok(()) // Objects have no owner, mode or settable mtime.
    }

    /// Objects directly under the directory's key, and the "directories" (common
    /// prefixes) there. A directory with no objects does not exist in a bucket.
    fn list_dir(&self, rel: &Path) -> io::Result<Vec<Found>> {
        let prefix = self.prefix(rel)?;
        let client = Arc::clone(&self.client);
        crate::block_on(&self.handle, async move {
            let _slot = client.slot().await;
            let listed = client
                .objects
                .list_with_delimiter(prefix.as_ref())
                .await
                .map_err(|e| io::Error::other(crate::error_chain(&e)))?;
            let name = |path: &object_store::path::Path| {
                path.filename().unwrap_or_default().as_bytes().to_vec()
            };
            let dirs = listed.common_prefixes.iter().map(|p| Found {
                name: name(p),
                dir: true,
            });
            let files = listed.objects.iter().map(|o| Found {
                name: name(&o.location),
                dir: false,
            });
            Ok(dirs.chain(files).collect())
        })
    }

    /// The object at the key, and every object under it.
    fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let path = self.path(rel)?;
        let client = Arc::clone(&self.client);
        crate::block_on(&self.handle, async move {
            let mut doomed = vec![path.clone()];
            let mut under = client.objects.list(Some(&path));
            while let Some(meta) = under.next().await {
                let meta = meta.map_err(|e| io::Error::other(crate::error_chain(&e)))?;
                doomed.push(meta.location);
            }
            for path in doomed {
                let _slot = client.slot().await;
                match client.objects.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io::Error::other(crate::error_chain(&e))),
                }
            }
            Ok(())
        })
    }
}

/// An object being written: small ones in one PUT at commit, large ones in parts as they
/// fill (the object only appears when the upload completes at commit).
struct ObjectSink {
    client: Arc<S3Client>,
    path: object_store::path::Path,
    handle: Handle,
    buffer: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
}

impl ObjectSink {
    fn error(&self, e: &object_store::Error) -> io::Error {
        io::Error::other(format!("{}: {}", self.path, crate::error_chain(e)))
    }

    fn send_part(&mut self) -> io::Result<()> {
        let part = PutPayload::from(std::mem::take(&mut self.buffer));
        let client = Arc::clone(&self.client);
        let path = self.path.clone();
        let upload = self.upload.take();
        let result = crate::block_on(&self.handle, async move {
            let _slot = client.slot().await;
            let mut upload = match upload {
                Some(u) => u,
                None => {
                    client
                        .objects
                        .put_multipart_opts(&path, PutMultipartOptions::default())
                        .await?
                }
            };
            match upload.put_part(part).await {
                Ok(()) => Ok(upload),
                Err(e) => {
                    // Give the parts already sent up now: the upload is not kept to retry.
                    let _ = upload.abort().await;
                    Err(e)
                }
            }
        });
        self.upload = Some(result.map_err(|e| self.error(&e))?);
        Ok(())
    }
}

impl Write for ObjectSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= self.client.options.part_size {
            self.send_part()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for ObjectSink {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        if self.upload.is_some() {
            if !self.buffer.is_empty() {
                self.send_part()?;
            }
            let mut upload = self.upload.take().expect("checked above");
            let result = crate::block_on(&self.handle, async move {
                let result = upload.complete().await;
                if result.is_err() {
                    let _ = upload.abort().await;
                }
                result
            });
            return result.map(drop).map_err(|e| self.error(&e));
        }
        let body = PutPayload::from(std::mem::take(&mut self.buffer));
        let client = Arc::clone(&self.client);
        let path = self.path.clone();
        let result = crate::block_on(&self.handle, async move {
            let _slot = client.slot().await;
            client.objects.put(&path, body).await
        });
        result.map(drop).map_err(|e| self.error(&e))
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // Not committed: give up the parts already sent (best effort).
        if let Some(mut upload) = self.upload.take() {
            self.handle.spawn(async move { upload.abort().await });
        }
    }
}
