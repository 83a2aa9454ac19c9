use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use stowage_backends::target::{FsTarget, Target};
use stowage_engine::restore::{restore, RestoreOptions};

use super::{human_bytes, print_json};
use stowage_s3::S3Target;

use crate::open::{Context, Location};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// Where to restore: a directory, in which the backed-up directory is recreated by name
    /// (like `tar -xf backup-images.tar -C /var/lib/docker/volumes`), or a bucket and
    /// prefix, s3://bucket/rootdirectory, which receives the backed-up directory's content
    /// object for object (the registry's s3 driver layout).
    #[arg(long, short = 't')]
    target: String,
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
    let (target, place): (Arc<dyn Target>, String) = match Location::parse(&args.target)? {
        Location::Dir(dir) => (
            Arc::new(FsTarget::new(&dir).with_context(|| format!("target {}", dir.display()))?),
            dir.join(&snapshot.name).display().to_string(),
        ),
        Location::S3(url) => (
            Arc::new(
                S3Target::open(url.clone(), &ctx.s3)
                    .await
                    .with_context(|| format!("target {url}"))?,
            ),
            url.to_string(),
        ),
    };
    let bars = ctx.bars();
    let opts = RestoreOptions {
        overwrite: args.overwrite,
        ..RestoreOptions::default()
    };
    let summary = restore(repo, &snapshot, target, opts, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&serde_json::json!({ "snapshot": id, "summary": summary }))?;
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {}; {} registry blobs verified",
            id.short(),
            place,
            summary.files,
            summary.dirs,
            summary.symlinks,
            human_bytes(summary.bytes),
            summary.verified_blobs
        );
    }
    Ok(ExitCode::SUCCESS)
}
