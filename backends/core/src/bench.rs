//! Measures a [`Store`]: put, get, list and delete throughput and latency for several
//! object sizes. Objects go under `stowage-bench/<random>/` and are deleted afterwards.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::store::{Store, StoreResult};

/// The directory (key prefix) the measurements' objects go under.
pub const PREFIX: &str = "stowage-bench";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Object sizes to measure, in bytes.
    pub sizes: Vec<usize>,
    /// Bytes written per size (at least `min_objects` and at most `max_objects` objects).
    pub bytes_per_size: usize,
    pub min_objects: usize,
    pub max_objects: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            sizes: vec![4 << 10, 1 << 20, 16 << 20],
            bytes_per_size: 128 << 20,
            min_objects: 16,
            max_objects: 1000,
            concurrency: 8,
        }
    }
}

/// One operation on one object size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub store: String,
    /// `put`, `get`, `list` or `delete`.
    pub op: &'static str,
    pub object_size: u64,
    /// Requests made (one `list` request covers all objects of the size).
    pub requests: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub requests_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// Runs every measurement against `store`, cleaning up after itself.
pub async fn bench_store(store: &dyn Store, opts: &BenchOptions) -> StoreResult<Vec<BenchRow>> {
    let run = format!("{PREFIX}/{:016x}", rand::random::<u64>());
    let mut rows = Vec::new();
    for &size in &opts.sizes {
        let count = (opts.bytes_per_size / size.max(1))
            .min(opts.max_objects)
            .max(opts.min_objects);
        let data: Bytes = (0..size)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>()
            .into();
        let keys: Vec<String> = (0..count).map(|i| format!("{run}/{size}/{i:06}")).collect();
        let total = (size * count) as u64;
        let describe = store.describe();
        let row = |op, requests: u64, bytes, elapsed: Duration, mut latencies: Vec<Duration>| {
            latencies.sort();
            let pick = |q: f64| {
                let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
                latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            let secs = elapsed.as_secs_f64().max(1e-9);
            BenchRow {
                store: describe.clone(),
                op,
                object_size: size as u64,
                requests,
                bytes,
                seconds: secs,
                mb_per_s: bytes as f64 / secs / 1e6,
                requests_per_s: requests as f64 / secs,
                latency_p50_ms: pick(0.5),
                latency_p99_ms: pick(0.99),
            }
        };

        let (elapsed, latencies) = timed_each(&keys, opts.concurrency, |key| {
            let data = data.clone();
            async move { store.put(&key, data).await }
        })
        .await?;
        rows.push(row("put", count as u64, total, elapsed, latencies));

        let (elapsed, latencies) = timed_each(&keys, opts.concurrency, |key| async move {
            let got = store.get(&key).await?;
            if got.len() != size {
                return Err(crate::StoreError::Io {
                    store: store.describe(),
                    op: "get",
                    key,
                    cause: std::io::Error::other(format!("{} bytes back of {size}", got.len())),
                });
            }
            Ok(())
        })
        .await?;
        rows.push(row("get", count as u64, total, elapsed, latencies));

        let started = Instant::now();
        let listed = store.list(&format!("{run}/{size}/")).await?;
        let elapsed = started.elapsed();
        if listed.len() != count {
            return Err(crate::StoreError::Io {
                store: describe.clone(),
                op: "list",
                key: format!("{run}/{size}/"),
                cause: std::io::Error::other(format!(
                    "listed {} objects, {count} were written",
                    listed.len()
                )),
            });
        }
        rows.push(row("list", 1, 0, elapsed, vec![elapsed]));

        let (elapsed, latencies) = timed_each(&keys, opts.concurrency, |key| async move {
            store.delete(&key).await
        })
        .await?;
        rows.push(row("delete", count as u64, 0, elapsed, latencies));
    }
    Ok(rows)
}

/// Runs `op` for every key, `concurrency` at a time; returns the wall time and each latency.
async fn timed_each<'a, F, Fut>(
    keys: &'a [String],
    concurrency: usize,
    op: F,
) -> StoreResult<(Duration, Vec<Duration>)>
where
    F: Fn(String) -> Fut + 'a,
    Fut: std::future::Future<Output = StoreResult<()>> + 'a,
{
    let started = Instant::now();
    let latencies = futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let request = op(key);
            async move {
                let t = Instant::now();
                request.await.map(|()| t.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok((started.elapsed(), latencies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[tokio::test]
    async fn reports_every_operation_and_cleans_up() {
        let store = MemoryStore::new();
        let opts = BenchOptions {
            sizes: vec![1000, 5000],
            bytes_per_size: 20_000,
            min_objects: 2,
            max_objects: 1000,
            concurrency: 3,
        };
        let rows = bench_store(&store, &opts).await.expect("bench");
        let ops: Vec<(&str, u64, u64)> = rows
            .iter()
            .map(|r| (r.op, r.object_size, r.requests))
            .collect();
        assert_eq!(
            ops,
            [
                ("put", 1000, 20),
                ("get", 1000, 20),
                ("list", 1000, 1),
                ("delete", 1000, 20),
                ("put", 5000, 4),
                ("get", 5000, 4),
                ("list", 5000, 1),
                ("delete", 5000, 4),
            ]
        );
        assert_eq!(rows[0].bytes, 20_000);
        assert!(
            store
                .list(&format!("{PREFIX}/"))
                .await
                .expect("list")
                .is_empty(),
            "cleaned up"
        );
    }
}
