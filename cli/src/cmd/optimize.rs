use std::process::ExitCode;
use std::sync::Arc;

use stowage_engine::BackupOptions;
use stowage_engine::SnapshotSource;

use super::backup::{report, run_backup};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot to optimize (default: the latest).
    #[arg(default_value = "latest")]
    snapshot: String,
    /// Print the new snapshot's summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Backs the snapshot up again from the repository itself, keeping its gzip registry blobs
/// that were stored as they are as gzip content. The new snapshot has the same host, source
/// and files; the next backup of that source takes it as its parent.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot).await?;
    if snapshot.tar.is_some() {
        anyhow::bail!(
            "snapshot {} is a tar snapshot; optimize works on volume snapshots",
            id.short()
        );
    }
    let mut tags = snapshot.tags.clone();
    if !tags.iter().any(|t| t == "optimized") {
        tags.push("optimized".into());
    }
    let opts = BackupOptions {
        host: snapshot.host.clone(),
        tags,
        replica_id: snapshot.replica_id.clone(),
        parent: Some(id.to_hex()),
        gzip: Some(true),
        reencode: true,
        ..BackupOptions::default()
    };
    let source = Arc::new(SnapshotSource::new(Arc::clone(&repo), snapshot).await?);
    let (new_id, new_snapshot) = run_backup(ctx, repo, source, opts).await?;
    if !args.json {
        println!("optimized snapshot {}:", id.short());
    }
    report(&new_id, &new_snapshot, args.json)?;
    Ok(ExitCode::SUCCESS)
}
