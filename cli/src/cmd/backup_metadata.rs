use std::process::ExitCode;

use super::human_bytes;
use super::tar_io::TarBackupArgs;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The metadata tar printed by `docker/dtr backup`, or `-` for stdin
    /// (e.g. `gpg -d backup.tar.gpg | stowage backup-metadata -`).
    #[arg(default_value = "-")]
    file: String,
    /// Read the tar from the command after `--` as it runs (e.g. `-- docker run --rm
    /// docker/dtr backup --ucp-url ...`); a command that fails writes no snapshot.
    #[arg(long, requires = "command", conflicts_with = "file")]
    stdin_from_command: bool,
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    common: TarBackupArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let input = match args.stdin_from_command {
        true => super::tar_io::command_input(&args.command)?,
        false => super::tar_io::input(&args.file)?,
    };
    let Some((id, snapshot)) = args
        .common
        .backup(ctx, input, "dtr-metadata", "dtr-metadata", true)
        .await?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let s = &snapshot.summary;
    let tables = snapshot.tables.as_ref().map(|t| t.len()).unwrap_or(0);
    let rows: u64 = snapshot.tables.iter().flat_map(|t| t.values()).sum();
    println!(
        "snapshot {} saved (DTR {} metadata: {tables} tables, {rows} rows)",
        id.short(),
        snapshot.dtr_version.as_deref().unwrap_or("?")
    );
    println!(
        "  {} entries, {}; new {} in {} blobs, stored {}, {:.2}s",
        s.files + s.dirs + s.symlinks,
        human_bytes(snapshot.tar.as_ref().map_or(0, |t| t.size)),
        human_bytes(s.new_bytes),
        s.new_blobs,
        human_bytes(s.stored_bytes),
        s.duration_secs
    );
    Ok(ExitCode::SUCCESS)
}
