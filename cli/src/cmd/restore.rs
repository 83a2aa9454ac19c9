use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use stowage_backends::target::FsTarget;
use stowage_engine::restore::{restore, RestoreOptions};

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// Directory to restore into; the backed-up directory is recreated in it by name
    /// (like `tar -xf backup-images.tar -C /var/lib/docker/volumes`).
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore into an existing directory of the same name, replacing files.
    #[arg(long)]
    overwrite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot).await?;
    let target =
        FsTarget::new(&args.target).with_context(|| format!("target {}", args.target.display()))?;
    let bars = ctx.bars();
    let opts = RestoreOptions {
        overwrite: args.overwrite,
        ..RestoreOptions::default()
    };
    let summary = restore(repo, &snapshot, Arc::new(target), opts, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&serde_json::json!({ "snapshot": id, "summary": summary }))?;
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {}; {} registry blobs verified",
            id.short(),
            args.target.join(&snapshot.name).display(),
            summary.files,
            summary.dirs,
            summary.symlinks,
            human_bytes(summary.bytes),
            summary.verified_blobs
        );
    }
    Ok(ExitCode::SUCCESS)
}
