use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::Arc;

use stowage_backends::source::Source;
use stowage_engine::Id;
use stowage_engine::Repository;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};

use super::{human_bytes, print_json};

use crate::open::{hostname, Context};

#[derive(clap::Args)]
pub struct Args {
    /// What to back up: a directory, e.g. /var/lib/docker/volumes/dtr-registry-<replica>,
    /// a registry in a bucket, s3://bucket/rootdirectory (the s3 driver's settings), or a
    /// registry on NFS read without a mount, nfs://host/export/path (DTR's --nfs-storage-url).
    source: String,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// DTR replica id (default: taken from a dtr-registry-<replica> directory name).
    #[arg(long)]
    replica_id: Option<String>,
    /// Compare against this snapshot instead of the latest of the same host and path.
    #[arg(long)]
    parent: Option<String>,
    /// Read every file again.
    #[arg(long)]
    force: bool,
    /// Do not compare inode numbers (NFS and FUSE mounts renumber them).
    #[arg(long)]
    ignore_inode: bool,
    /// Do not compare ctimes.
    #[arg(long)]
    ignore_ctime: bool,
    /// Keep gzip registry blobs as their plaintext plus a recipe this time (default: as
    /// the repository was created, `init --gzip`).
    #[arg(long, overrides_with = "no_gzip")]
    gzip: bool,
    /// Store gzip registry blobs as they are this time.
    #[arg(long)]
    no_gzip: bool,
    /// Fail when a file or directory cannot be read (permissions) instead of leaving it
    /// out of a partial snapshot (exit status 3).
    #[arg(long)]
    fail_on_unreadable: bool,
    /// Leave out what matches (repeatable): a name anywhere (`*.tmp`), a path from the
    /// backed-up directory when it has a `/` (`_data/docker/registry/v2/repositories/*/_uploads`),
    /// directories only with a trailing `/` (`_uploads/`); `**` spans directories.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Read --exclude patterns from this file, one per line (`#` starts a comment).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<std::path::PathBuf>,
    /// Write no snapshot when nothing changed since the parent (exit 0, and the parent's id).
    #[arg(long)]
    skip_if_unchanged: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The exit status of a backup that saved a partial snapshot (README, "Exit status").
pub const PARTIAL: u8 = 3;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let source = ctx.open_source(&args.source).await?;
    let opts = BackupOptions {
        host: args.host.unwrap_or_else(hostname),
        tags: args.tags,
        replica_id: args.replica_id,
        parent: args.parent,
        force: args.force,
        ignore_inode: args.ignore_inode,
        ignore_ctime: args.ignore_ctime,
        gzip: match (args.gzip, args.no_gzip) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        fail_on_unreadable: args.fail_on_unreadable,
        exclude: excludes(&args.excludes, &args.exclude_files)?,
        skip_if_unchanged: args.skip_if_unchanged,
        ..BackupOptions::default()
    };
    let (id, snapshot) = run_backup(ctx, repo, source, opts).await?;
    record(ctx, &snapshot);
    report(&id, &snapshot, args.json)?;
    let summary = &snapshot.summary;
    Ok(match summary.unreadable + summary.digest_mismatches {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(PARTIAL),
    })
}

/// Runs a backup with progress bars, standard output muted meanwhile.
pub(crate) async fn run_backup(
    ctx: &Context,
    repo: Arc<Repository>,
    source: Arc<dyn Source>,
    opts: BackupOptions,
) -> anyhow::Result<(Id, Snapshot)> {
    let bars = ctx.bars();
    let muted = MutedStdout::new()?;
    let backed_up = backup(repo, source, opts, bars.clone()).await;
    drop(muted);
    bars.finish();
    Ok(backed_up?)
}

/// Prints a new snapshot's summary: as JSON, or as a few lines.
/// A backup's figures for `--metrics-file`.
fn record(ctx: &Context, snapshot: &Snapshot) {
    let s = &snapshot.summary;
    let m = &ctx.metrics;
    m.set("backup_files", "Files in the snapshot.", s.files as f64);
    m.set(
        "backup_bytes",
        "Bytes of the files in the snapshot.",
        s.bytes as f64,
    );
    m.set(
        "backup_files_read",
        "Files read (new or changed).",
        s.files_read as f64,
    );
    m.set(
        "backup_new_bytes",
        "Plaintext bytes of new blobs.",
        s.new_bytes as f64,
    );
    m.set(
        "backup_stored_bytes",
        "Bytes added to the repository.",
        s.stored_bytes as f64,
    );
    m.set(
        "backup_unreadable",
        "Files and directories that could not be read.",
        s.unreadable as f64,
    );
    m.set(
        "backup_digest_mismatches",
        "Registry blobs that did not match their digest.",
        s.digest_mismatches as f64,
    );
    m.set(
        "backup_snapshot_timestamp_seconds",
        "When the snapshot (or the unchanged parent) was taken.",
        snapshot.time.timestamp() as f64,
    );
}

/// The --exclude patterns and those of the --exclude-file files.
fn excludes(patterns: &[String], files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut all = patterns.to_vec();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading exclude file {}", file.display()))?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(all)
}

pub(crate) fn report(id: &Id, snapshot: &Snapshot, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({ "id": id, "snapshot": snapshot }));
    }
    let s = &snapshot.summary;
    if s.skipped {
        println!(
            "nothing changed since snapshot {} ({}): no snapshot written",
            id.short(),
            snapshot.name
        );
        return Ok(());
    }
    println!("snapshot {} saved ({})", id.short(), snapshot.name);
    println!(
        "  files {} ({} read, {} unchanged), dirs {}, {}",
        s.files,
        s.files_read,
        s.files_unchanged,
        s.dirs,
        human_bytes(s.bytes)
    );
    println!(
        "  read {}, new {} in {} blobs, stored {} in {} packs, {:.2}s",
        human_bytes(s.bytes_read),
        human_bytes(s.new_bytes),
        s.new_blobs,
        human_bytes(s.stored_bytes),
        s.new_packs,
        s.duration_secs
    );
    if s.excluded > 0 {
        println!(
            "  excluded: {} files or directories (--exclude)",
            s.excluded
        );
    }
    if s.unreadable > 0 {
        println!(
            "  partial: {} files or directories could not be read and are left out (see the warnings)",
            s.unreadable
        );
    }
    if s.digest_mismatches > 0 {
        println!(
            "  partial: {} registry blob(s) do not match their digest, stored as found: {}",
            s.digest_mismatches,
            s.mismatched.join(", ")
        );
    }
    if s.gzip_layers + s.gzip_partial + s.gzip_fallbacks > 0 {
        println!(
            "  gzip layers: {} re-creatable, {} in part, {} stored as they are",
            s.gzip_layers, s.gzip_partial, s.gzip_fallbacks
        );
    }
    Ok(())
}

/// Points standard output at /dev/null while it lives. preflate-rs prints debugging text
/// to standard output on some streams it cannot re-create; ours carries JSON summaries.
struct MutedStdout {
    saved: std::os::fd::OwnedFd,
}

impl MutedStdout {
    fn new() -> anyhow::Result<Self> {
        use std::io::Write as _;
        use std::os::fd::{AsRawFd, FromRawFd};
        std::io::stdout().flush()?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        // SAFETY: dup has no preconditions; its result is checked.
        let saved = match unsafe { libc::dup(1) } {
            -1 => return Err(std::io::Error::last_os_error().into()),
            // SAFETY: dup returned a new descriptor that nothing else owns.
            fd => unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        };
        // SAFETY: both descriptors are open.
        if unsafe { libc::dup2(null.as_raw_fd(), 1) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(MutedStdout { saved })
    }
}

impl Drop for MutedStdout {
    fn drop(&mut self) {
        use std::io::Write as _;
        use std::os::fd::AsRawFd;
        // What is still buffered was printed while muted.
        let _ = std::io::stdout().flush();
        // SAFETY: both descriptors are open; dup2 replaces 1 with the saved stdout.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 1) };
    }
}
