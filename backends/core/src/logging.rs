//! A [`Store`] wrapper that logs every request with `tracing` (as restic's `logger`
//! backend): at `trace` when it starts, at `debug` when it ends (method, key, bytes,
//! duration, the error if any), at `warn` instead when it took longer than a threshold
//! ([`SLOW`] unless set), so a slow server or link shows up in the log without `debug` on.
//!
//! Events go to whatever subscriber the program installed (none here: a library only
//! emits); their target is this module, `stowage_backends::logging`.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{ObjectMeta, Store, StoreResult, Upload};

/// Requests slower than this are logged at `warn` by default.
pub const SLOW: Duration = Duration::from_secs(5);

/// Wraps a store and logs its requests; otherwise transparent (same description, same
/// results).
#[derive(Debug)]
pub struct LoggingStore {
    inner: Arc<dyn Store>,
    slow: Duration,
}

impl LoggingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, slow: SLOW }
    }

    /// Requests slower than `slow` are logged at `warn`.
    pub fn with_slow_threshold(mut self, slow: Duration) -> Self {
        self.slow = slow;
        self
    }

    async fn logged<T>(
        &self,
        method: &'static str,
        key: &str,
        sent: Option<u64>,
        call: impl std::future::Future<Output = StoreResult<T>>,
        received: impl FnOnce(&T) -> Option<u64>,
    ) -> StoreResult<T> {
        logged(
            &Request {
                store: &self.inner.describe(),
                method,
                key,
                slow: self.slow,
            },
            sent,
            call,
            received,
        )
        .await
    }
}

/// What is logged of a request besides its outcome.
struct Request<'a> {
    store: &'a str,
    method: &'static str,
    key: &'a str,
    slow: Duration,
}

/// Runs `call`, logging it. `bytes` is what was sent (`sent`) or else what came back
/// (`received`).
async fn logged<T>(
    request: &Request<'_>,
    sent: Option<u64>,
    call: impl std::future::Future<Output = StoreResult<T>>,
    received: impl FnOnce(&T) -> Option<u64>,
) -> StoreResult<T> {
    let Request {
        store,
        method,
        key,
        slow,
    } = *request;
    tracing::trace!(store, method, key, bytes = sent, "store request");
    let started = Instant::now();
    let result = call.await;
    let duration = started.elapsed();
    let bytes = sent.or_else(|| result.as_ref().ok().and_then(received));
    let error = result.as_ref().err().map(tracing::field::display);
    if duration > slow {
        tracing::warn!(
            store,
            method,
            key,
            bytes,
            ?duration,
            ?slow,
            error,
            "slow store request"
        );
    } else {
        tracing::debug!(
            store,
            method,
            key,
            bytes,
            ?duration,
            error,
            "store request done"
        );
    }
    result
}

#[async_trait]
impl Store for LoggingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let len = data.len() as u64;
        self.logged("put", key, Some(len), self.inner.put(key, data), |_| None)
            .await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let len = |data: &Bytes| Some(data.len() as u64);
        self.logged("get", key, None, self.inner.get(key), len)
            .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let len = |data: &Bytes| Some(data.len() as u64);
        let call = self.inner.get_range(key, range.clone());
        let what = format!("{key} [{}..{})", range.start, range.end);
        self.logged("get_range", &what, None, call, len).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let size = |meta: &ObjectMeta| Some(meta.size);
        self.logged("head", key, None, self.inner.head(key), size)
            .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let total = |objects: &Vec<ObjectMeta>| Some(objects.iter().map(|m| m.size).sum());
        self.logged("list", prefix, None, self.inner.list(prefix), total)
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.logged("delete", key, None, self.inner.delete(key), |_| None)
            .await
    }

    fn retains(&self) -> bool {
        self.inner.retains()
    }

    async fn start_upload(&self, dir: &str, size_hint: usize) -> StoreResult<Box<dyn Upload>> {
        let call = self.inner.start_upload(dir, size_hint);
        let inner = self
            .logged("start_upload", dir, None, call, |_| None)
            .await?;
        Ok(Box::new(LoggedUpload {
            inner,
            store: Arc::clone(&self.inner),
            slow: self.slow,
            written: 0,
        }))
    }

    async fn extend_retention(&self, keys: &[String]) -> StoreResult<u64> {
        let what = match keys {
            [one] => one.clone(),
            _ => format!("{} keys", keys.len()),
        };
        let call = self.inner.extend_retention(keys);
        self.logged("extend_retention", &what, None, call, |_| None)
            .await
    }
}

/// An upload of the inner store whose `finish` is logged with the bytes written.
struct LoggedUpload {
    inner: Box<dyn Upload>,
    /// The store that started `inner`, which its `finish` is given.
    store: Arc<dyn Store>,
    slow: Duration,
    written: u64,
}

#[async_trait]
impl Upload for LoggedUpload {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn finish(self: Box<Self>, _store: &dyn Store, key: &str) -> StoreResult<()> {
        let LoggedUpload {
            inner,
            store,
            slow,
            written,
        } = *self;
        let describe = store.describe();
        let request = Request {
            store: &describe,
            method: "finish_upload",
            key,
            slow,
        };
        let finish = inner.finish(store.as_ref(), key);
        logged(&request, Some(written), finish, |_| None).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use tracing::Level;

    use super::LoggingStore;
    use crate::memory::MemoryStore;
    use crate::store::{ObjectMeta, StoreResult};
    use crate::test_log::Captured;
    use crate::Store;

    /// A memory store whose reads take 200 ms (far beyond the other calls, even on a loaded
    /// machine).
    #[derive(Debug, Default)]
    struct Slow(MemoryStore);

    #[async_trait]
    impl Store for Slow {
        fn describe(&self) -> String {
            "slow".into()
        }
        async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
            self.0.put(key, data).await
        }
        async fn get(&self, key: &str) -> StoreResult<Bytes> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.get(key).await
        }
        async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> StoreResult<Bytes> {
            self.0.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> StoreResult<()> {
            self.0.delete(key).await
        }
    }

    #[tokio::test]
    async fn requests_are_logged_and_slow_ones_warned_about() {
        let (captured, _guard) = Captured::start();
        let store = LoggingStore::new(Arc::new(Slow::default()))
            .with_slow_threshold(Duration::from_millis(100));
        store
            .put("data/k", Bytes::from_static(b"12345"))
            .await
            .expect("put");
        assert_eq!(store.get("data/k").await.expect("get").len(), 5);
        assert!(store.head("missing").await.is_err());
        let traced = captured.at(Level::TRACE);
        assert_eq!(traced.len(), 3, "{traced:?}");
        let done = captured.at(Level::DEBUG);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(
            done[0].contains("method=put key=data/k bytes=5 duration="),
            "{done:?}"
        );
        assert!(
            done[1].contains("method=head key=missing")
                && done[1].contains("error=object missing not found in memory"),
            "{done:?}"
        );
        let warned = captured.at(Level::WARN);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("method=get key=data/k bytes=5")
                && warned[0].contains("slow store request"),
            "{warned:?}"
        );
    }

    #[tokio::test]
    async fn a_logging_store_is_transparent() {
        let memory = Arc::new(MemoryStore::new());
        let store = LoggingStore::new(memory.clone()).with_slow_threshold(Duration::ZERO);
        assert_eq!(store.describe(), "memory");
        crate::conformance::run_all(&store).await;
        store.put("k", Bytes::from_static(b"v")).await.expect("put");
        assert_eq!(
            memory.get("k").await.expect("inner"),
            Bytes::from_static(b"v")
        );
        assert!(store.get("missing").await.is_err_and(|e| e.is_not_found()));
        let mut upload = store.start_upload("up", 0).await.expect("start");
        upload.write(b"streamed").expect("write");
        upload.finish(&store, "up/one").await.expect("finish");
        assert_eq!(
            memory.get("up/one").await.expect("inner"),
            Bytes::from_static(b"streamed")
        );
    }
}
