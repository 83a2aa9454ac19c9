//! A [`Store`] wrapper that fails on command, for reliability tests.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::store::{ObjectMeta, Store, StoreError, StoreResult};

/// Wraps a store; the put chosen with [`FaultyStore::fail_nth_put`] fails, so does every put
/// under the prefix given to [`FaultyStore::fail_puts_under`], and every read of a key
/// starting with `flip_prefix` comes back with one bit flipped.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    puts: AtomicU64,
    fail_put_at: AtomicU64,
    flip_prefix: std::sync::Mutex<Option<String>>,
    fail_prefix: std::sync::Mutex<Option<String>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            puts: AtomicU64::new(0),
            fail_put_at: AtomicU64::new(0),
            flip_prefix: std::sync::Mutex::new(None),
            fail_prefix: std::sync::Mutex::new(None),
        }
    }

    /// Makes the `n`-th put from now fail (and every later one succeed).
    pub fn fail_nth_put(&self, n: u64) {
        let done = self.puts.load(Ordering::SeqCst);
        self.fail_put_at.store(done + n, Ordering::SeqCst);
    }

    /// Makes every put of a key starting with `prefix` fail.
    pub fn fail_puts_under(&self, prefix: Option<&str>) {
        *self.fail_prefix.lock().unwrap_or_else(|e| e.into_inner()) = prefix.map(str::to_string);
    }

    /// Flips one bit of every object read whose key starts with `prefix`.
    pub fn flip_bits_under(&self, prefix: Option<&str>) {
        *self.flip_prefix.lock().unwrap_or_else(|e| e.into_inner()) = prefix.map(str::to_string);
    }

    fn maybe_flip(&self, key: &str, data: Bytes) -> Bytes {
        let guard = self.flip_prefix.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_deref() {
            Some(prefix) if key.starts_with(prefix) && !data.is_empty() => {
                let mut copy = BytesMut::from(&data[..]);
                let middle = copy.len() / 2;
                copy[middle] ^= 0x10;
                copy.freeze()
            }
            _ => data,
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let under = {
            let prefix = self.fail_prefix.lock().unwrap_or_else(|e| e.into_inner());
            prefix.as_deref().is_some_and(|p| key.starts_with(p))
        };
        if under || n == self.fail_put_at.load(Ordering::SeqCst) {
            return Err(StoreError::Injected {
                store: self.describe(),
                op: "put",
                key: key.to_string(),
            });
        }
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let data = self.inner.get(key).await?;
        Ok(self.maybe_flip(key, data))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let data = self.inner.get_range(key, range).await?;
        Ok(self.maybe_flip(key, data))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}
