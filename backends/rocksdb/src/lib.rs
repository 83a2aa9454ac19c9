//! [`KvStore`] on RocksDB: the engine's local cache, kept under the user's cache directory.
//! It is only a cache; deleting its directory loses nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch, DB,
};
use stowage_backends::kv::{KvError, KvResult, KvStore};

pub struct RocksKv {
    db: DB,
    /// Held (an exclusive `flock` on `stowage.lock`) while the database is open.
    _lock: File,
}

/// Why a cache could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another process has the cache open (RocksDB allows one writer).
    InUse,
    Failed(KvError),
}

impl From<KvError> for OpenError {
    fn from(e: KvError) -> Self {
        OpenError::Failed(e)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::InUse => f.write_str("in use by another process"),
            OpenError::Failed(e) => e.fmt(f),
        }
    }
}

impl RocksKv {
    /// Opens (creating when missing) the cache database in `dir`. A cache another process
    /// has open is [`OpenError::InUse`], decided by a lock of our own beside the database
    /// (not by RocksDB's message).
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let lock_path = dir.join("stowage.lock");
        let failed = |e: std::io::Error| KvError(format!("{}: {e}", lock_path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(failed)?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => OpenError::InUse,
                _ => OpenError::Failed(failed(e)),
            });
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // A cache of fixed-size records: small memtables keep the footprint flat.
        opts.set_write_buffer_size(4 << 20);
        opts.set_max_write_buffer_number(2);
        opts.set_keep_log_file_num(2);
        // Lookups are point gets, most of them for blobs not stored yet: a Bloom filter per
        // table answers those without reading a block, and index and filter blocks live in a
        // small block cache instead of each open table holding its own, so memory stays flat
        // as the index grows (BENCHMARKS.md, "A large index"). Filters and indexes are
        // partitioned: a table of a million records has a filter of over a megabyte, more
        // than a shard of the cache holds, so a whole filter was read from the file and
        // checksummed again on every lookup (BENCHMARKS.md, "Registries of many small
        // files"); partitions of a few kilobytes stay cached, under a pinned top level.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_block_cache(&Cache::new_lru_cache(8 << 20));
        opts.set_block_based_table_factory(&table);
        let db =
            DB::open(&opts, dir).map_err(|e| KvError(format!("opening {}: {e}", dir.display())))?;
        Ok(Self { db, _lock: lock })
    }
}

fn err(e: rocksdb::Error) -> KvError {
    KvError(e.to_string())
}

impl KvStore for RocksKv {
    fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.db.get(key).map_err(err)
    }

    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> KvResult<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k, v);
        }
        self.db.write(batch).map_err(err)
    }

    fn delete_batch(&self, keys: &[Vec<u8>]) -> KvResult<()> {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.delete(k);
        }
        self.db.write(batch).map_err(err)
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> KvResult<()> {
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(err)?;
            if !k.starts_with(prefix) || !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_open_elsewhere_is_in_use_until_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = RocksKv::open(dir.path()).expect("open");
        assert!(matches!(RocksKv::open(dir.path()), Err(OpenError::InUse)));
        drop(first);
        RocksKv::open(dir.path()).expect("open again once closed");
    }

    #[test]
    fn persists_and_scans_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let kv = RocksKv::open(dir.path()).expect("open");
            kv.put_batch(&[
                (b"a1".to_vec(), b"x".to_vec()),
                (b"b1".to_vec(), b"y".to_vec()),
                (b"b2".to_vec(), b"z".to_vec()),
                (b"c1".to_vec(), b"w".to_vec()),
            ])
            .expect("put");
            kv.delete_batch(&[b"a1".to_vec()]).expect("delete");
        }
        let kv = RocksKv::open(dir.path()).expect("reopen");
        assert_eq!(kv.get(b"a1").expect("get"), None);
        assert_eq!(kv.get(b"c1").expect("get"), Some(b"w".to_vec()));
        let mut seen = Vec::new();
        kv.scan_prefix(b"b", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
        assert_eq!(
            seen,
            vec![
                (b"b1".to_vec(), b"y".to_vec()),
                (b"b2".to_vec(), b"z".to_vec())
            ]
        );
    }
}
