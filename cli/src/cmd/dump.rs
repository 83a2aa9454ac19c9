use std::process::ExitCode;

use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// The file's path as `ls` shows it, e.g. dtr-backup-v2.9.0/rethink/properties/0.
    path: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (_, snapshot) = repo
        .find_snapshot_in(&args.snapshot, &args.filter.engine())
        .await?;
    let mut out = std::io::stdout().lock();
    stowage_engine::dump(&repo, &snapshot, &args.path, &mut out).await?;
    Ok(ExitCode::SUCCESS)
}
