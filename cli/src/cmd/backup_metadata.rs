use std::process::ExitCode;

use stowage_engine::tar_in::{backup_tar, TarOptions};

use super::tar_io::input;
use super::{human_bytes, print_json};
use crate::open::{hostname, Context};

#[derive(clap::Args)]
pub struct Args {
    /// The metadata tar printed by `docker/dtr backup`, or `-` for stdin
    /// (e.g. `gpg -d backup.tar.gpg | stowage backup-metadata -`).
    #[arg(default_value = "-")]
    file: String,
    /// The DTR replica the backup was taken from.
    #[arg(long)]
    replica_id: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (reader, uri) = input(&args.file)?;
    let opts = TarOptions {
        host: args.host.unwrap_or_else(hostname),
        tags: args.tags,
        replica_id: args.replica_id,
        kind: "dtr-metadata".into(),
        uri,
        fallback_name: "dtr-metadata".into(),
        dtr_metadata: true,
        pack_size: 16 << 20,
    };
    let bars = ctx.bars();
    let (id, snapshot) = backup_tar(repo, reader, opts, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&serde_json::json!({ "id": id, "snapshot": snapshot }))?;
        return Ok(ExitCode::SUCCESS);
    }
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
