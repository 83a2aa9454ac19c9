//! An in-memory [`Store`] for unit tests and benchmarks.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{validate_key, ObjectMeta, Store, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(key: &str) -> StoreError {
        StoreError::NotFound {
            store: "memory".into(),
            key: key.into(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        validate_key("memory", key)?;
        self.objects().insert(key.to_string(), data);
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| Self::not_found(key))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let data = self.get(key).await?;
        let end = (range.end as usize).min(data.len());
        let start = (range.start as usize).min(end);
        Ok(data.slice(start..end))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let size = self.get(key).await?.len() as u64;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
        })
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.objects().remove(key);
        Ok(())
    }
}
