//! Micro-benchmarks of each stage of the backup and restore pipelines, then both pipelines
//! end to end on the memory store. Inputs are what a registry volume holds: gzip layers
//! (most of the bytes) and compressible text (manifests, configs). Inputs are made once per
//! run; only the stage itself is timed.
//!
//! `cargo bench -p stowage-benches`, or add `-- chunk` (a name filter) or `-- --quick`.

use std::cell::OnceCell;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use fastcdc::v2020::{FastCDC, Normalization};
use sha2::{Digest, Sha256};
use stowage_backends::memory::MemoryStore;
use stowage_backends::source::{FsSource, Source};
use stowage_backends::target::{FsTarget, Target};
use stowage_backends::{KvStore, MemoryKv, Store};
use stowage_benches::{gzip_layer, text, write_volume};
use stowage_engine::format::chunker::{Chunker, ChunkerParams};
use stowage_engine::format::compress::{compress, decompress, Compression};
use stowage_engine::format::crypto::Keys;
use stowage_engine::InitOptions;
use stowage_engine::Repository;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{restore, RestoreOptions};
use stowage_engine::{NoProgress, Progress};

const MIB: usize = 1 << 20;
/// The layers of the volume; together they are the 64 MiB gzip input.
const LAYER_SIZES: [usize; 4] = [24 * MIB, 20 * MIB, 12 * MIB, 8 * MIB];
const TEXT_SIZE: usize = 64 * MIB;
/// What per-chunk stages see: the default chunker's average chunk.
const CHUNK: usize = MIB;
const PASSWORD: &[u8] = b"bench";

struct Inputs {
    layers: Vec<Vec<u8>>,
    /// The layers back to back.
    gzip: Vec<u8>,
    text: Vec<u8>,
}

impl Inputs {
    /// One chunk from the middle of a layer, away from the gzip header.
    fn gzip_chunk(&self) -> &[u8] {
        &self.gzip[8 * MIB..8 * MIB + CHUNK]
    }

    fn text_chunk(&self) -> &[u8] {
        &self.text[..CHUNK]
    }
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let (layers, text) = std::thread::scope(|s| {
            let layers: Vec<_> = LAYER_SIZES
                .iter()
                .enumerate()
                .map(|(i, &size)| s.spawn(move || gzip_layer(i as u64 + 1, size)))
                .collect();
            let text = text(100, TEXT_SIZE);
            let layers: Vec<Vec<u8>> = layers
                .into_iter()
                .map(|h| h.join().expect("layer generator"))
                .collect();
            (layers, text)
        });
        Inputs {
            gzip: layers.concat(),
            layers,
            text,
        }
    })
}

fn chunk(c: &mut Criterion) {
    let inputs = inputs();
    let params = ChunkerParams::default();
    let seed = 0x5eed;
    let chunker = Chunker::new(params, seed);
    let count = |data: &[u8]| {
        let mut chunks = 0usize;
        chunker
            .chunk(data, data.len() as u64, |c| -> std::io::Result<()> {
                black_box(c);
                chunks += 1;
                Ok(())
            })
            .expect("chunking memory");
        chunks
    };
    let mut group = c.benchmark_group("chunk");
    group.sampling_mode(SamplingMode::Flat);
    for (name, data) in [("gzip", &inputs.gzip), ("text", &inputs.text)] {
        let chunks = count(data);
        eprintln!(
            "chunk/{name}: {chunks} chunks, {} bytes on average",
            data.len() / chunks
        );
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| b.iter(|| count(data)));
    }
    // The floor for `Chunker`: FastCDC over the whole input in place, with no reader, no
    // buffer and no refills.
    let data = &inputs.gzip;
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("gzip_fastcdc_in_place", |b| {
        b.iter(|| {
            FastCDC::with_level_and_seed(
                data,
                params.min,
                params.avg,
                params.max,
                Normalization::Level1,
                seed,
            )
            .count()
        })
    });
    group.finish();
}

fn blob_id(c: &mut Criterion) {
    let keys = Keys::random();
    let data = inputs().gzip_chunk();
    let mut group = c.benchmark_group("blob_id");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| keys.blob_id(black_box(data))));
    group.finish();
}

fn compress_decision(c: &mut Criterion) {
    let inputs = inputs();
    let level = InitOptions::default().compression_level;
    let mut group = c.benchmark_group("compress_decision");
    for (name, data, expected) in [
        ("gzip", inputs.gzip_chunk(), Compression::None),
        ("text", inputs.text_chunk(), Compression::Zstd),
    ] {
        let (decision, stored) = compress(data, level);
        eprintln!(
            "compress_decision/{name}: {decision:?}, {} -> {} bytes",
            data.len(),
            stored.len()
        );
        if decision != expected {
            eprintln!("warning: compress_decision/{name}: expected {expected:?}");
        }
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| b.iter(|| compress(black_box(data), level)));
    }
    group.finish();

    // What restore pays for each compressed blob.
    let data = inputs.text_chunk();
    let (decision, packed) = compress(data, level);
    let packed = packed.into_owned();
    let mut group = c.benchmark_group("decompress");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("text", |b| {
        b.iter_batched(
            || packed.clone(),
            |packed| decompress(decision, packed, data.len(), String::new).expect("decompress"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn seal_open(c: &mut Criterion) {
    let keys = Keys::random();
    let data = inputs().gzip_chunk();
    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| keys.seal(black_box(data))));
    group.finish();

    let sealed = keys.seal(data);
    let mut group = c.benchmark_group("open");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| {
        b.iter(|| keys.open(black_box(&sealed), String::new).expect("opens"))
    });
    group.finish();
}

fn sha256(c: &mut Criterion) {
    let data = inputs().gzip_chunk();
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| Sha256::digest(black_box(data))));
    group.finish();
}

/// A new repository on a memory store, opened (key derivation is not what we measure).
async fn fresh_repository() -> Arc<Repository> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Repository::init(store.as_ref(), PASSWORD, &InitOptions::default())
        .await
        .expect("init");
    let cache = |_: &str| Ok(Arc::new(MemoryKv::new()) as Arc<dyn KvStore>);
    Arc::new(
        Repository::open(store, PASSWORD, cache)
            .await
            .expect("open"),
    )
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let volume = write_volume(dir.path(), &inputs().layers).expect("writing the volume");
    let source: Arc<dyn Source> = Arc::new(FsSource::new(&volume.root).expect("source"));
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let run_backup = |repo: &Arc<Repository>| {
        rt.block_on(backup(
            Arc::clone(repo),
            Arc::clone(&source),
            BackupOptions::default(),
            Arc::clone(&progress),
        ))
        .expect("backup")
    };

    let mut group = c.benchmark_group("end_to_end");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Bytes(volume.bytes));
    group.bench_function("backup_memory_store", |b| {
        b.iter_batched(
            || rt.block_on(fresh_repository()),
            // The repository is returned so that freeing it is not timed.
            |repo| (run_backup(&repo), repo),
            BatchSize::PerIteration,
        )
    });

    let restored = dir.path().join("restored");
    let into = restored.join(volume.root.file_name().expect("volume name"));
    let fresh_target = || {
        if into.exists() {
            std::fs::remove_dir_all(&into).expect("removing the last restore");
        }
        Arc::new(FsTarget::new(&restored).expect("target")) as Arc<dyn Target>
    };
    let run_restore = |(repo, snapshot): &(Arc<Repository>, Snapshot), target| {
        rt.block_on(restore(
            Arc::clone(repo),
            snapshot,
            target,
            RestoreOptions::default(),
            Arc::clone(&progress),
        ))
        .expect("restore")
    };
    let backed_up = OnceCell::new();
    group.bench_function("restore", |b| {
        let backed_up = backed_up.get_or_init(|| {
            let repo = rt.block_on(fresh_repository());
            let (_, snapshot) = run_backup(&repo);
            let s = &snapshot.summary;
            eprintln!(
                "end_to_end: volume of {} files, {} bytes; {} blobs, {} bytes stored in {} packs",
                volume.files, volume.bytes, s.new_blobs, s.stored_bytes, s.new_packs
            );
            let backed_up = (repo, snapshot);
            let summary = run_restore(&backed_up, fresh_target());
            assert_eq!(
                (summary.files, summary.bytes, summary.verified_blobs),
                (volume.files, volume.bytes, volume.blobs),
                "restore brought back the volume"
            );
            backed_up
        });
        b.iter_batched(
            fresh_target,
            |target| run_restore(backed_up, target),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = stages;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = chunk, blob_id, compress_decision, seal_open, sha256, end_to_end
}
criterion_main!(stages);
