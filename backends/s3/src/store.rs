//! A repository in a bucket (and key prefix).

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, WriteMultipart,
};
use stowage_backends::store::validate_key;
use stowage_backends::{ObjectMeta, Store, StoreError, StoreResult};

use crate::client::{ObjectInfo, S3Client};
use crate::location::S3Url;
use crate::options::{ObjectLock, S3Options};

/// A [`Store`] on S3 or an S3-compatible server.
///
/// Writes are create-if-absent (`If-None-Match: *`) where the server honours it; an object
/// that is already there is left alone, which is correct because every repository key is
/// a content hash or a fresh random id. Objects from `multipart_threshold` up are uploaded in
/// parts. With Object Lock settings every object is written with retention, and `delete`
/// refuses objects still under retention.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Arc<S3Client>,
    url: S3Url,
    /// Retention for every object written: the options', else the bucket's default.
    lock: Option<ObjectLock>,
}

impl S3Store {
    /// Opens the store; fails when the bucket does not exist. Without Object Lock options,
    /// the bucket's default retention (if it has one) is taken, so that a run without the
    /// option still keeps every snapshot's data retained as long as the snapshot.
    pub async fn open(url: S3Url, options: &S3Options) -> StoreResult<Self> {
        let client = S3Client::connect(&url.bucket, options).await?;
        let mut store = S3Store {
            client,
            url,
            lock: options.lock,
        };
        store
            .client
            .check_bucket()
            .await
            .map_err(|e| store.error("open", "", e))?;
        if store.lock.is_none() {
            store.lock = store
                .client
                .default_retention()
                .await
                .map_err(|e| store.error("open", "", e))?;
        }
        Ok(store)
    }

    /// The retention objects are written with, if any.
    pub fn lock(&self) -> Option<ObjectLock> {
        self.lock
    }

    /// After a create-if-absent found the key taken: the object there must be complete.
    /// (A retried PUT can also be answered 409/412 while its first attempt never landed.)
    async fn verify_existing(
        &self,
        key: &str,
        path: &object_store::path::Path,
        len: usize,
    ) -> StoreResult<()> {
        match self.client.objects.head(path).await {
            Ok(meta) if meta.size == len as u64 => Ok(()),
            Ok(meta) => Err(self.error(
                "put",
                key,
                format!(
                    "an object of {} bytes is in the way of one of {len}",
                    meta.size
                ),
            )),
            Err(e) => Err(self.object_error("put", key, e)),
        }
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// Retention and storage class of the object at `key`.
    pub async fn object_info(&self, key: &str) -> StoreResult<ObjectInfo> {
        let path = self.path("head", key)?;
        let _slot = self.client.slot().await;
        self.client
            .object_info(path.as_ref())
            .await
            .map_err(|e| self.error("head", key, e))
    }

    fn error(&self, op: &'static str, key: &str, message: impl ToString) -> StoreError {
        StoreError::Io {
            store: self.describe(),
            op,
            key: key.to_string(),
            cause: std::io::Error::other(message.to_string()),
        }
    }

    fn object_error(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        match e {
            // S3 answers 404 for a missing bucket too: that is no "missing object".
            object_store::Error::NotFound { ref source, .. }
                if format!("{source:?}").contains("NoSuchBucket") =>
            {
                self.error(
                    op,
                    key,
                    format!("bucket {} does not exist", self.url.bucket),
                )
            }
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            },
            e => self.error(op, key, crate::error_chain(&e)),
        }
    }

    fn path(&self, op: &'static str, key: &str) -> StoreResult<object_store::path::Path> {
        validate_key(&self.describe(), key)?;
        self.client
            .path(&self.url.key(key))
            .map_err(|e| self.error(op, key, e))
    }

    /// Extends `key`'s retention to `target` when it ends before `needed`.
    async fn extend_one(
        &self,
        key: &str,
        lock: ObjectLock,
        needed: SystemTime,
        target: SystemTime,
    ) -> StoreResult<u64> {
        let path = self.path("retain", key)?;
        let _slot = self.client.slot().await;
        let info = self
            .client
            .object_info(path.as_ref())
            .await
            .map_err(|e| self.error("retain", key, e))?;
        if info.retain_until.is_some_and(|until| until >= needed) {
            return Ok(0);
        }
        self.client
            .put_retention(path.as_ref(), lock, target)
            .await
            .map_err(|e| self.error("retain", key, e))?;
        Ok(1)
    }

    async fn put_multipart(
        &self,
        path: &object_store::path::Path,
        data: Bytes,
    ) -> object_store::Result<()> {
        let upload = self
            .client
            .objects
            .put_multipart_opts(path, PutMultipartOptions::default())
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.client.options.part_size);
        writer.put(data);
        writer.finish().await.map(drop)
    }
}

/// Packs are the bulk of a repository: the only objects given the chosen storage class.
fn is_pack(key: &str) -> bool {
    key.starts_with("data/")
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let path = self.path("put", key)?;
        let _slot = self.client.slot().await;
        let len = data.len();
        if self.client.writes_with_sdk(is_pack(key), self.lock) {
            let created = self
                .client
                .sdk_put(path.as_ref(), data, is_pack(key), self.lock)
                .await
                .map_err(|e| self.error("put", key, e))?;
            return match created {
                true => Ok(()),
                false => self.verify_existing(key, &path, len).await,
            };
        }
        let result = if data.len() >= self.client.options.multipart_threshold {
            self.put_multipart(&path, data).await
        } else {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.client
                .objects
                .put_opts(&path, data.into(), opts)
                .await
                .map(drop)
        };
        match result {
            Ok(()) => Ok(()),
            // Already there: same key, same bytes (see the type's documentation).
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(()),
            Err(e) => Err(self.object_error("put", key, e)),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let path = self.path("get", key)?;
        let _slot = self.client.slot().await;
        let result = self.client.objects.get(&path).await;
        match result {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.object_error("get", key, e)),
            Err(e) => Err(self.object_error("get", key, e)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let path = self.path("get", key)?;
        let _slot = self.client.slot().await;
        let result = match range.is_empty() {
            true => self.client.objects.head(&path).await.map(|_| Bytes::new()),
            false => self.client.objects.get_range(&path, range.clone()).await,
        };
        match result {
            Ok(bytes) => Ok(bytes),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.object_error("get", key, e)),
            // A range starting at or past the end (S3 answers 416): clipped to nothing.
            Err(e) => match self.client.objects.head(&path).await {
                Ok(meta) if range.start >= meta.size => Ok(Bytes::new()),
                _ => Err(self.object_error("get", key, e)),
            },
        }
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let path = self.path("head", key)?;
        let _slot = self.client.slot().await;
        let meta = self
            .client
            .objects
            .head(&path)
            .await
            .map_err(|e| self.object_error("head", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.size,
        })
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        // object_store lists by whole path segments: list the directory part of the prefix
        // and keep the keys that start with the rest.
        let dir = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let full_dir = self.url.key(dir);
        let dir_path = match full_dir.is_empty() {
            true => None,
            false => Some(
                self.client
                    .path(&full_dir)
                    .map_err(|e| self.error("list", prefix, e))?,
            ),
        };
        let _slot = self.client.slot().await;
        let objects: Vec<object_store::ObjectMeta> = self
            .client
            .objects
            .list(dir_path.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.object_error("list", prefix, e))?;
        Ok(objects
            .into_iter()
            .filter_map(|m| {
                let key = self.url.relative(m.location.as_ref())?;
                key.starts_with(prefix).then(|| ObjectMeta {
                    key: key.to_string(),
                    size: m.size,
                })
            })
            .collect())
    }

    fn retains(&self) -> bool {
        self.lock.is_some()
    }

    /// Extends retention to [`ObjectLock::until`], only where it ends before
    /// [`ObjectLock::needed`]: each object is touched about once per half slack.
    async fn extend_retention(&self, keys: &[String]) -> StoreResult<u64> {
        let Some(lock) = self.lock else {
            return Ok(0);
        };
        let now = SystemTime::now();
        let (needed, target) = (lock.needed(now), lock.until(now));
        // Owned keys and store handles: the stream's futures must not borrow across the
        // trait's boxed future (async_trait's Send bound cannot name those lifetimes).
        futures::stream::iter(keys.to_vec())
            .map(|key| {
                let store = self.clone();
                async move { store.extend_one(&key, lock, needed, target).await }
            })
            .buffer_unordered(self.client.options.max_requests.max(1))
            .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path("delete", key)?;
        let _slot = self.client.slot().await;
        // In a bucket with Object Lock a plain DELETE "succeeds" by hiding the object behind a
        // delete marker; a repository must not lose objects it was told to keep that way.
        if let Some(until) = self
            .client
            .retained_until(path.as_ref())
            .await
            .map_err(|e| self.error("delete", key, e))?
        {
            return Err(StoreError::Locked {
                store: self.describe(),
                key: key.to_string(),
                until: chrono::DateTime::<chrono::Utc>::from(until).to_rfc3339(),
            });
        }
        match self.client.objects.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error("delete", key, e)),
        }
    }
}
