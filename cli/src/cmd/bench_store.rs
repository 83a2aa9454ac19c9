use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use stowage_backends::bench::{bench_store, BenchOptions, BenchRow};
use stowage_backends::memory::MemoryStore;
use stowage_backends::Store;

use super::print_json;
use crate::open::{Context, Location};

#[derive(clap::Args)]
#[group(skip)] // also flattened into `stowage bench`
pub struct Args {
    /// Stores to measure: directories, s3://bucket/prefix, or memory:// (a baseline).
    /// Objects go under stowage-bench/ and are deleted afterwards.
    #[arg(required = true)]
    pub stores: Vec<String>,
    /// Object sizes, comma-separated (suffixes K, M: binary units).
    #[arg(long, default_value = "4K,1M,16M")]
    sizes: String,
    /// Bytes written per size (at least 16 and at most 1000 objects).
    #[arg(long, default_value = "128M")]
    bytes: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A size as the volume generator reads them (`4K`, `16MiB`, `128MB`, `100`); not zero.
pub fn parse_size(s: &str) -> anyhow::Result<usize> {
    match stowage_fixtures::parse_size(s).map_err(anyhow::Error::msg)? {
        0 => bail!("{s:?} is not a usable size"),
        n => usize::try_from(n).map_err(|_| anyhow!("{s:?} is too large")),
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let (rows, _) = measure(ctx, &args).await?;
    if args.json {
        print_json(&rows)?;
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a store location for benchmarking: `memory://` is a fresh in-memory store; stores
/// that retain objects are refused, since the benchmark's objects could not be deleted.
pub async fn bench_store_at(ctx: &Context, location: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match location {
        "memory://" | "memory" => Arc::new(MemoryStore::new()),
        _ => ctx.create_store(location).await?,
    };
    if store.retains() {
        bail!(
            "{}: objects written there are retained (Object Lock), so the benchmark's \
             objects could not be deleted; measure a bucket or prefix without retention",
            store.describe()
        );
    }
    Ok(store)
}

/// Put, get, list and delete measured on every store of `args`; also the stores' names, in
/// the order given.
pub async fn measure(ctx: &Context, args: &Args) -> anyhow::Result<(Vec<BenchRow>, Vec<String>)> {
    let opts = BenchOptions {
        sizes: args
            .sizes
            .split(',')
            .map(parse_size)
            .collect::<anyhow::Result<_>>()?,
        bytes_per_size: parse_size(&args.bytes)?,
        concurrency: args.concurrency,
        ..BenchOptions::default()
    };
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut names = Vec::new();
    for location in &args.stores {
        let store = bench_store_at(ctx, location).await?;
        names.push(store.describe());
        if !args.json && !ctx.quiet {
            eprintln!("measuring {} ...", store.describe());
        }
        rows.extend(bench_store(store.as_ref(), &opts).await?);
        // A directory store keeps the directories its objects were in; leave none behind.
        if let Ok(Location::Dir(dir)) = Location::parse(location) {
            remove_empty_dirs(&dir.join(stowage_backends::bench::PREFIX))
                .with_context(|| format!("cleaning up {}", dir.display()))?;
        }
    }
    Ok((rows, names))
}

/// Removes `dir` and the directories below it, as long as they hold no files.
fn remove_empty_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_dirs(&entry.path())?;
        }
    }
    // Fails on a directory that still holds something: nothing but empty directories goes.
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        other => other,
    }
}

pub fn print_table(rows: &[BenchRow]) {
    println!(
        "{:<32} {:<6} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "store", "op", "size", "requests", "MB/s", "req/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:<32} {:<6} {:>9} {:>8} {:>9.1} {:>9.1} {:>9.2} {:>9.2}",
            r.store,
            r.op,
            super::human_bytes(r.object_size),
            r.requests,
            r.mb_per_s,
            r.requests_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4K").expect("size"), 4096);
        assert_eq!(parse_size("16MiB").expect("size"), 16 << 20);
        assert_eq!(parse_size("100").expect("size"), 100);
        assert!(parse_size("0").is_err());
        assert!(parse_size("3X").is_err());
        assert!(parse_size("").is_err());
    }
}
