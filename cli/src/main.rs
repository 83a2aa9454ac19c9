//! The `stowage` command: parses arguments, opens the repository, runs one engine pipeline,
//! prints the result. Errors become a message on stderr and a non-zero exit.

mod cmd;
mod open;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "Deduplicating, encrypted backups of Docker registry storage"
)]
pub struct Cli {
    /// Repository location: a directory path.
    #[arg(long, short = 'r', env = "STOWAGE_REPO", global = true)]
    repo: Option<String>,
    /// Read the repository password from this file (else STOWAGE_PASSWORD, else a prompt).
    #[arg(long, env = "STOWAGE_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Where the local index cache lives (default: the user's cache directory).
    #[arg(long, env = "STOWAGE_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Never draw progress bars.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(cmd::init::Args),
    /// Back up a directory (e.g. /var/lib/docker/volumes/dtr-registry-<replica>).
    Backup(cmd::backup::Args),
    /// List snapshots.
    Snapshots(cmd::snapshots::Args),
    /// List the files in a snapshot.
    Ls(cmd::ls::Args),
    /// Restore a snapshot: the backed-up directory is recreated under the target.
    Restore(cmd::restore::Args),
    /// Verify the repository's structure, and with --read-data every byte.
    Check(cmd::check::Args),
    /// Show what the repository stores and what deduplication saves.
    Stats(cmd::stats::Args),
}

fn main() -> ExitCode {
    limit_heap_growth();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps glibc from holding on to freed pack-sized buffers: by default its mmap threshold
/// grows with every freed large block until 16 MiB packs come from (and stay in) the heap
/// arenas of many threads, and resident memory climbs far above what is in use.
fn limit_heap_growth() {
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = open::Context::new(&cli);
    match cli.command {
        Command::Init(args) => cmd::init::run(&ctx, args).await,
        Command::Backup(args) => cmd::backup::run(&ctx, args).await,
        Command::Snapshots(args) => cmd::snapshots::run(&ctx, args).await,
        Command::Ls(args) => cmd::ls::run(&ctx, args).await,
        Command::Restore(args) => cmd::restore::run(&ctx, args).await,
        Command::Check(args) => cmd::check::run(&ctx, args).await,
        Command::Stats(args) => cmd::stats::run(&ctx, args).await,
    }
}
