//! An ordered key-value store for the engine's local cache (RocksDB in production).

use std::collections::BTreeMap;
use std::sync::Mutex;

pub type KvResult<T> = Result<T, KvError>;

#[derive(Debug, thiserror::Error)]
#[error("local cache: {0}")]
pub struct KvError(pub String);

/// A local, ordered, persistent map. Only a cache: losing it loses nothing.
pub trait KvStore: Send + Sync {
    fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>>;
    /// Writes all pairs atomically.
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> KvResult<()>;
    fn delete_batch(&self, keys: &[Vec<u8>]) -> KvResult<()>;
    /// Calls `f` on every pair whose key starts with `prefix`, in key order, until it
    /// returns false.
    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> KvResult<()>;
}

#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KvStore for MemoryKv {
    fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }

    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> KvResult<()> {
        let mut map = self.map();
        for (k, v) in pairs {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> KvResult<()> {
        let mut map = self.map();
        for k in keys {
            map.remove(k);
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> KvResult<()> {
        let map = self.map();
        for (k, v) in map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }
}
