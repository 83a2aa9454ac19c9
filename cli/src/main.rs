//! The `stowage` command: parses arguments, opens the repository, runs one engine pipeline,
//! prints the result. Errors become a message on stderr and a non-zero exit.

mod cmd;
mod metrics;
mod open;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "Deduplicating, encrypted backups of Docker registry storage"
)]
pub struct Cli {
    /// Repository location: a directory path or s3://bucket/prefix.
    #[arg(long, short = 'r', env = "STOWAGE_REPO", global = true)]
    repo: Option<String>,
    /// Read the repository password from this file (else --password-command, else
    /// STOWAGE_PASSWORD, else a prompt).
    #[arg(long, env = "STOWAGE_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this command (by `sh -c`) and take the first line it prints as the password:
    /// a secret manager, e.g. `pass show backup/registry`.
    #[arg(long, env = "STOWAGE_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Where the local index cache lives (default: the user's cache directory).
    #[arg(long, env = "STOWAGE_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Never draw progress bars.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    /// Write the run's figures (exit status, duration; a backup's files, bytes and partial
    /// counts) to this file in the Prometheus text format, for node_exporter's textfile
    /// collector (e.g. /var/lib/node_exporter/stowage.prom).
    #[arg(long, env = "STOWAGE_METRICS_FILE", global = true)]
    metrics_file: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Args,
    #[command(subcommand)]
    command: Command,
}

/// How to reach s3:// locations (repositories, sources, targets). Credentials come from the
/// standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles.
#[derive(clap::Args)]
#[command(next_help_heading = "S3")]
pub struct S3Args {
    /// An S3-compatible endpoint (e.g. http://127.0.0.1:9000); AWS itself when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true)]
    s3_endpoint: Option<String>,
    /// Region (default: AWS_REGION, the profile's, or us-east-1).
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// Address buckets as https://bucket.host/ instead of https://host/bucket/.
    #[arg(long, global = true)]
    s3_virtual_hosted: bool,
    /// Write every object with Object Lock retention, e.g. governance:30d or compliance:90d
    /// (the bucket must have Object Lock enabled).
    #[arg(long, env = "STOWAGE_S3_LOCK", global = true)]
    s3_lock: Option<stowage_s3::ObjectLock>,
    /// Storage class for packs, e.g. STANDARD_IA or GLACIER_IR (other objects stay STANDARD).
    #[arg(long, env = "STOWAGE_S3_STORAGE_CLASS", global = true)]
    s3_storage_class: Option<String>,
    /// Retries of a failed S3 request, with exponential backoff.
    #[arg(long, env = "STOWAGE_S3_RETRIES", default_value_t = 6, global = true)]
    s3_retries: usize,
    /// Seconds one S3 request attempt may take.
    #[arg(long, env = "STOWAGE_S3_TIMEOUT", default_value_t = 60, global = true)]
    s3_timeout: u64,
}

impl S3Args {
    fn options(&self) -> stowage_s3::S3Options {
        stowage_s3::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            virtual_hosted: self.s3_virtual_hosted,
            lock: self.s3_lock,
            storage_class: self.s3_storage_class.clone(),
            retries: self.s3_retries,
            timeout: std::time::Duration::from_secs(self.s3_timeout.max(1)),
            ..stowage_s3::S3Options::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(cmd::init::Args),
    /// Back up a directory (e.g. /var/lib/docker/volumes/dtr-registry-<replica>) or a registry
    /// kept in a bucket (s3://bucket/rootdirectory).
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
    /// Back up a DTR metadata tar (`docker/dtr backup` output) from a file or stdin, kept
    /// entry by entry so the exact tar comes back.
    BackupMetadata(cmd::backup_metadata::Args),
    /// Write the exact tar a snapshot was made from: a DTR metadata backup (stdout by default,
    /// for `docker/dtr restore`) or an imported image tar.
    RestoreMetadata(cmd::restore_metadata::Args),
    /// Print one file of a snapshot (e.g. one row of a DTR metadata table).
    Dump(cmd::dump::Args),
    /// Turn an image tar backup (`tar -cf backup-images.tar dtr-registry-<replica>`) into a
    /// snapshot.
    ImportTar(cmd::import_tar::Args),
    /// What changed between two snapshots: repositories, tags and blobs, then other paths.
    Diff(cmd::diff::Args),
    /// Which snapshots hold a path (a pattern) or a registry blob (--digest): one line per
    /// snapshot and path, its short id first. Exits 1 when nothing is found.
    Find(cmd::find::Args),
    /// Keep the gzip layers of a snapshot that were stored as they are as gzip content (a
    /// new snapshot of the same files, read from the repository): for a first backup made
    /// fast without --gzip.
    Optimize(cmd::optimize::Args),
    /// Remove snapshots a retention policy does not keep (grouped by host and source).
    Forget(cmd::forget::Args),
    /// Add, remove or set snapshots' tags (each changed snapshot gets a new id).
    Tag(cmd::tag::Args),
    /// Delete the data no snapshot needs: marks it first, deletes it in a later prune after
    /// a grace period; repacks partly used packs. Safe beside running backups.
    Prune(cmd::prune::Args),
    /// Repair what `check` names: the index (from the packs' own headers) or snapshots that
    /// need lost blobs.
    #[command(subcommand)]
    Repair(cmd::repair::Command),
    /// Manage the key files: one per password that opens the repository.
    #[command(subcommand)]
    Key(cmd::key::Command),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page, or write one per command with --dir.
    Man(cmd::docs::ManArgs),
    /// Copy snapshots to another repository (e.g. offsite to a bucket), sending only the
    /// blobs it lacks; creates the destination when it does not exist.
    Copy(cmd::copy::Args),
    /// Measure a store: put/get/list throughput and latency by object size.
    BenchStore(cmd::bench_store::Args),
    /// Compare stores side by side: what bench-store measures plus a backup and a restore of
    /// a registry volume on each; a table, --json, or an SVG chart.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    limit_heap_growth();
    // Like other Unix tools, end quietly when the reader of stdout goes away (`ls | head`)
    // instead of panicking on a failed print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let command = matches.subcommand_name().unwrap_or("").to_string();
    init_logging();
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
    let started = std::time::Instant::now();
    let metrics_file = cli.metrics_file.clone();
    let ctx = open::Context::new(&cli);
    let code = match runtime.block_on(run(&ctx, cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    };
    if let Some(path) = metrics_file {
        let status = [0, 3, 10, 12, 130]
            .into_iter()
            .find(|&n| ExitCode::from(n) == code)
            .unwrap_or(1);
        let repository = ctx.repo_location().unwrap_or("");
        let seconds = started.elapsed().as_secs_f64();
        if let Err(e) = ctx
            .metrics
            .write(&path, &command, repository, status, seconds)
        {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    code
}

/// Log events (store requests, retries, slow calls) go to stderr: warnings by default, so
/// that retries and slow requests show; `STOWAGE_LOG` takes a `tracing` filter
/// (`STOWAGE_LOG=debug`, `STOWAGE_LOG=stowage_backends::logging=trace`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOWAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// The exit status of a failed command (README, "Exit status"): 10 when there is no
/// repository, 12 for a wrong password, 1 for every other error. The engine's error kind
/// decides; errors of the CLI's own (a bad option value) are 1.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use stowage_engine::ErrorKind;
    let kind = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<stowage_engine::Error>())
        .map(stowage_engine::Error::kind);
    match kind {
        Some(ErrorKind::NoRepository) => ExitCode::from(10),
        Some(ErrorKind::WrongPassword) => ExitCode::from(12),
        _ => ExitCode::FAILURE,
    }
}

/// Keeps glibc from holding on to freed pack-sized buffers: by default its mmap threshold
/// grows with every freed large block until 16 MiB packs come from (and stay in) the heap
/// arenas of many threads, and resident memory climbs far above what is in use.
fn limit_heap_growth() {
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run(ctx: &open::Context, cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => cmd::init::run(ctx, args).await,
        Command::Backup(args) => cmd::backup::run(ctx, args).await,
        Command::Snapshots(args) => cmd::snapshots::run(ctx, args).await,
        Command::Ls(args) => cmd::ls::run(ctx, args).await,
        Command::Restore(args) => cmd::restore::run(ctx, args).await,
        Command::Check(args) => cmd::check::run(ctx, args).await,
        Command::Stats(args) => cmd::stats::run(ctx, args).await,
        Command::Copy(args) => cmd::copy::run(ctx, args).await,
        Command::Forget(args) => cmd::forget::run(ctx, args).await,
        Command::Tag(args) => cmd::tag::run(ctx, args).await,
        Command::Prune(args) => cmd::prune::run(ctx, args).await,
        Command::Repair(command) => cmd::repair::run(ctx, command).await,
        Command::Key(command) => cmd::key::run(ctx, command).await,
        Command::Completions(args) => Ok(cmd::docs::completions(Cli::command(), args)),
        Command::Man(args) => cmd::docs::man(Cli::command(), args),
        Command::Diff(args) => cmd::diff::run(ctx, args).await,
        Command::Find(args) => cmd::find::run(ctx, args).await,
        Command::BackupMetadata(args) => cmd::backup_metadata::run(ctx, args).await,
        Command::Optimize(args) => cmd::optimize::run(ctx, args).await,
        Command::RestoreMetadata(args) => cmd::restore_metadata::run(ctx, args).await,
        Command::Dump(args) => cmd::dump::run(ctx, args).await,
        Command::ImportTar(args) => cmd::import_tar::run(ctx, args).await,
        Command::BenchStore(args) => cmd::bench_store::run(ctx, args).await,
        Command::Bench(args) => cmd::bench::run(ctx, args).await,
    }
}
