//! Grows a repository's index with synthetic entries, to show that backups keep flat memory
//! and speed however many blobs the repository holds (BENCHMARKS.md, "A large index").
//!
//! `synth-index <repository dir> <entries>` (password from STOWAGE_PASSWORD) writes index
//! files of 50,000 entries each, naming packs that do not exist: only for benchmarks, on a
//! repository that is thrown away afterwards (`check` and `prune` would rightly complain).

use std::sync::Arc;

use stowage_backends::fs::FsStore;
use stowage_backends::MemoryKv;
use stowage_engine::format::compress::Compression;
use stowage_engine::format::index_file::encode_index_file;
use stowage_engine::format::pack::{BlobKind, PackEntry};
use stowage_engine::{Id, Repository};

const PER_FILE: u64 = stowage_engine::format::index_file::INDEX_FILE_ENTRIES as u64;
const PER_PACK: u64 = 2_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, entries] = args.as_slice() else {
        return Err("usage: synth-index <repository dir> <entries>".into());
    };
    let entries: u64 = entries.parse()?;
    let password = std::env::var("STOWAGE_PASSWORD")?;
    let store = Arc::new(FsStore::open(std::path::Path::new(dir))?);
    let kv = Arc::new(MemoryKv::new());
    // The repository's index is synced on open; a fresh one has none to read.
    let repo = Repository::open(store, password.as_bytes(), move |_| Ok(kv)).await?;
    let mut written = 0u64;
    while written < entries {
        let in_file = PER_FILE.min(entries - written);
        let packs: Vec<(Id, Vec<PackEntry>)> = (0..in_file.div_ceil(PER_PACK))
            .map(|p| {
                let first = written + p * PER_PACK;
                let count = PER_PACK.min(written + in_file - first);
                let pack = Id::hash_of(format!("synthetic pack {first}").as_bytes());
                let blobs = (0..count)
                    .map(|n| PackEntry {
                        kind: BlobKind::Data,
                        compression: Compression::None,
                        id: Id::hash_of(&(first + n).to_le_bytes()),
                        offset: (n as u32) * 1024,
                        length: 1024,
                        raw_length: 1000,
                    })
                    .collect();
                (pack, blobs)
            })
            .collect();
        repo.save_sealed("index", &encode_index_file(&packs))
            .await?;
        written += in_file;
    }
    println!("{written} synthetic index entries written to {dir}");
    Ok(())
}
