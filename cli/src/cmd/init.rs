use std::process::ExitCode;

use stowage_engine::chunker::ChunkerParams;
use stowage_engine::repo::{InitOptions, Repository};

use crate::open::{hostname, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Smallest chunk, in bytes.
    #[arg(long, default_value_t = ChunkerParams::default().min)]
    chunk_min: u32,
    /// Average chunk, in bytes.
    #[arg(long, default_value_t = ChunkerParams::default().avg)]
    chunk_avg: u32,
    /// Largest chunk, in bytes.
    #[arg(long, default_value_t = ChunkerParams::default().max)]
    chunk_max: u32,
    /// zstd level for compressible data.
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    /// Keep gzip registry blobs (image layers) as their plaintext plus a recipe that
    /// re-creates their exact bytes, so a rebuilt layer stores only what changed inside
    /// it. Backups of new layers are slower (~20 MB/s per core); see README, "Gzip layers".
    #[arg(long)]
    gzip: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let password = ctx.password(true)?;
    let store = ctx.new_store_at(ctx.repo_location()?).await?;
    let opts = InitOptions {
        chunker: ChunkerParams {
            min: args.chunk_min,
            avg: args.chunk_avg,
            max: args.chunk_max,
        },
        compression_level: args.compression_level,
        host: hostname(),
        gzip: args.gzip,
    };
    let config = Repository::init(store.as_ref(), &password, &opts).await?;
    println!(
        "created repository {} at {}",
        &config.id[..8],
        store.describe()
    );
    Ok(ExitCode::SUCCESS)
}
