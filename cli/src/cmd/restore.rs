use std::process::ExitCode;
use std::sync::Arc;

use stowage_engine::{check_path, normalize_path as normalize, registry_selection, Selection};
use stowage_engine::{restore, RestoreOptions, RestoreSummary};

use super::{human_bytes, print_json};

use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// Where to restore: a directory, in which the backed-up directory is recreated by name
    /// (like `tar -xf backup-images.tar -C /var/lib/docker/volumes`), or a bucket and
    /// prefix, s3://bucket/rootdirectory, which receives the backed-up directory's content
    /// object for object (the registry's s3 driver layout), or a path on NFS,
    /// nfs://host/export/path, which receives the backed-up directory's content (written
    /// without a mount; owners are restored when run as root on a no_root_squash export).
    #[arg(long, short = 't', required_unless_present = "format")]
    target: Option<String>,
    /// Write a tar stream instead (`tar`): GNU tar extracts it to the same tree, with
    /// the backed-up directory as its top entry, like `tar -cf backup-images.tar
    /// dtr-registry-<replica-id>`.
    #[arg(long, value_parser = ["tar"], conflicts_with = "target")]
    format: Option<String>,
    /// With --format tar: the file to write (default: stdout).
    #[arg(long, short = 'o', requires = "format")]
    output: Option<std::path::PathBuf>,
    /// Restore only what a registry needs to serve these images: a repository
    /// (`team/app-web`) or one tag of it (`team/app-web:v2`); repeatable.
    #[arg(long = "include", conflicts_with = "format")]
    includes: Vec<String>,
    /// Restore only this path (relative to the backed-up directory) and what is below it;
    /// repeatable.
    #[arg(long = "include-path", conflicts_with = "format")]
    include_paths: Vec<String>,
    /// Restore into an existing directory of the same name, replacing files.
    #[arg(long)]
    overwrite: bool,
    /// Leave runs of zeros (whole 4 KiB blocks) as holes on a local filesystem, so sparse
    /// files (VM images, preallocated databases) take their former space, not their size.
    #[arg(long, conflicts_with = "format")]
    sparse: bool,
    /// Make the target equal to the snapshot: remove what the restored directory holds
    /// that the snapshot does not (implies --overwrite; not with --include).
    #[arg(long, conflicts_with_all = ["format", "includes", "include_paths"])]
    delete: bool,
    /// Write and remove nothing: count what would be restored and name what --delete
    /// would remove.
    #[arg(long, conflicts_with = "format")]
    dry_run: bool,
    /// Leave files the target already holds with the snapshot's size and mtime: a restore
    /// that stopped part way resumes (implies --overwrite).
    #[arg(long, conflicts_with = "format")]
    skip_existing: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (id, snapshot) = repo
        .find_snapshot_in(&args.snapshot, &args.filter.engine())
        .await?;
    let Some(target) = &args.target else {
        return restore_as_tar(ctx, repo, id, snapshot, args).await;
    };
    let (target, place) = ctx.open_target(target, &snapshot.name).await?;
    let bars = ctx.bars();
    let opts = RestoreOptions {
        overwrite: args.overwrite || args.delete || args.skip_existing,
        skip_existing: args.skip_existing,
        sparse: args.sparse,
        delete: args.delete,
        dry_run: args.dry_run,
        only: selection(&repo, &snapshot, &args.includes, &args.include_paths).await?,
        ..RestoreOptions::default()
    };
    let summary = restore(repo, &snapshot, target, opts, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&serde_json::json!({ "snapshot": id, "summary": summary }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (restored, removed) = match summary.dry_run {
        true => ("would restore", "would remove"),
        false => ("restored", "removed"),
    };
    println!(
        "{restored} snapshot {} to {place}: {}",
        id.short(),
        describe(&summary)
    );
    if args.skip_existing {
        println!(
            "  {} files already there, not written again",
            summary.skipped
        );
    }
    if args.delete {
        println!(
            "{removed} {} entries the snapshot does not have",
            summary.deleted
        );
        for path in &summary.deletions {
            println!("  {removed} {path}");
        }
        if summary.deleted > summary.deletions.len() as u64 {
            println!(
                "  ... and {} more",
                summary.deleted - summary.deletions.len() as u64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(summary: &RestoreSummary) -> String {
    format!(
        "{} files, {} dirs, {} symlinks, {}; {} registry blobs verified",
        summary.files,
        summary.dirs,
        summary.symlinks,
        human_bytes(summary.bytes),
        summary.verified_blobs
    )
}

/// `restore --format tar`: the snapshot as a tar stream, to stdout or a file that gets its
/// name once complete.
async fn restore_as_tar(
    ctx: &Context,
    repo: Arc<stowage_engine::Repository>,
    id: stowage_engine::Id,
    snapshot: stowage_engine::Snapshot,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let (output, writer) = super::tar_io::Output::open(args.output.as_deref())?;
    let bars = ctx.bars();
    let summary = stowage_engine::restore_tar(repo, &snapshot, writer, bars.clone()).await?;
    bars.finish();
    output.commit()?;
    // stdout may be the tar itself: the summary goes to stderr.
    if args.json {
        let json = serde_json::json!({ "snapshot": id, "summary": summary });
        eprintln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        eprintln!(
            "wrote snapshot {} as a tar: {}",
            id.short(),
            describe(&summary)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The partial restore `--include` and `--include-path` ask for, if any.
async fn selection(
    repo: &stowage_engine::Repository,
    snapshot: &stowage_engine::Snapshot,
    includes: &[String],
    include_paths: &[String],
) -> anyhow::Result<Option<Arc<Selection>>> {
    if includes.is_empty() && include_paths.is_empty() {
        return Ok(None);
    }
    let files = match includes.is_empty() {
        true => Default::default(),
        false => registry_selection(repo, snapshot, includes).await?,
    };
    let mut prefixes = Vec::new();
    for path in include_paths {
        let full = format!("{}/{}", snapshot.name, normalize(path)?);
        check_path(repo, snapshot, &full).await?;
        prefixes.push(full);
    }
    Ok(Some(Arc::new(Selection::new(files, prefixes))))
}
