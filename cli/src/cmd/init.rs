use std::process::ExitCode;

use stowage_engine::format::chunker::ChunkerParams;
use stowage_engine::{InitOptions, Repository};

use crate::open::{hostname, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Smallest chunk, in bytes [default: 524288; with --gzip 65536].
    #[arg(long)]
    chunk_min: Option<u32>,
    /// Average chunk, in bytes [default: 1048576; with --gzip 262144].
    #[arg(long)]
    chunk_avg: Option<u32>,
    /// Largest chunk, in bytes [default: 8388608; with --gzip 1048576].
    #[arg(long)]
    chunk_max: Option<u32>,
    /// zstd level for compressible data.
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    /// Keep gzip registry blobs (image layers) as their plaintext plus a recipe that
    /// re-creates their exact bytes, so a rebuilt layer stores only what changed inside
    /// it. Backups of new layers are slower (~13 MB/s of plaintext), and so are restores;
    /// chunks are smaller by default (a changed file costs the chunks around the change).
    /// See README, "Gzip layers".
    #[arg(long)]
    gzip: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let password = ctx.password(true)?;
    let store = ctx.create_store(ctx.repo_location()?).await?;
    let opts = InitOptions {
        chunker: {
            let default = match args.gzip {
                true => ChunkerParams::for_gzip_content(),
                false => ChunkerParams::default(),
            };
            ChunkerParams {
                min: args.chunk_min.unwrap_or(default.min),
                avg: args.chunk_avg.unwrap_or(default.avg),
                max: args.chunk_max.unwrap_or(default.max),
            }
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
    eprintln!(
        "keep the password safe, and a copy of it away from this host: without it nothing in \
         the repository can be read, and no one can recover it (`stowage key add` adds \
         another)"
    );
    Ok(ExitCode::SUCCESS)
}
