use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use stowage_engine::write_original_tar;

use super::tar_io::Output;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// Write the tar here (default: stdout, ready for `docker/dtr restore < ...`).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Refuse unless the backup is of this DTR version.
    #[arg(long)]
    expect_version: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (id, snapshot) = repo
        .find_snapshot_in(&args.snapshot, &args.filter.engine())
        .await?;
    if snapshot.tar.is_none() {
        bail!(
            "snapshot {} was not made from a tar (backup-metadata or import-tar); use restore --format tar",
            id.short()
        );
    }
    let version = snapshot.dtr_version.clone().unwrap_or_default();
    if let Some(expected) = &args.expect_version {
        if *expected != version {
            bail!(
                "snapshot {} holds DTR {} metadata, not {expected}: restore it with a DTR of that version",
                id.short(),
                if version.is_empty() { "no" } else { &version }
            );
        }
    }
    let (output, writer) = Output::open(args.output.as_deref())?;
    let bars = ctx.bars();
    let bytes = write_original_tar(repo, &snapshot, writer, bars.clone()).await?;
    bars.finish();
    output.commit()?;
    if let Some(path) = &args.output {
        eprintln!(
            "wrote {} ({} bytes, the tar of snapshot {})",
            path.display(),
            bytes,
            id.short()
        );
    }
    Ok(ExitCode::SUCCESS)
}
