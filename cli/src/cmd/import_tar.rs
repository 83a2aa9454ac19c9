use std::process::ExitCode;

use super::human_bytes;
use super::tar_io::TarBackupArgs;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// An image backup made with `tar -cf backup-images.tar dtr-registry-<replica-id>`, or `-`
    /// for stdin. The snapshot restores as a directory, as a tar, and as this exact tar.
    file: String,
    #[command(flatten)]
    common: TarBackupArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let Some((id, snapshot)) = args
        .common
        .backup(
            ctx,
            super::tar_io::input(&args.file)?,
            "tar",
            "imported",
            false,
        )
        .await?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let s = &snapshot.summary;
    println!(
        "snapshot {} saved ({}, imported from {})",
        id.short(),
        snapshot.name,
        snapshot.source.uri
    );
    println!(
        "  files {}, dirs {}, {}; new {} in {} blobs, stored {}, {:.2}s",
        s.files,
        s.dirs,
        human_bytes(s.bytes),
        human_bytes(s.new_bytes),
        s.new_blobs,
        human_bytes(s.stored_bytes),
        s.duration_secs
    );
    Ok(ExitCode::SUCCESS)
}
