use std::process::ExitCode;

use stowage_engine::tar_in::{backup_tar, TarOptions};

use super::tar_io::input;
use super::{human_bytes, print_json};
use crate::open::{hostname, Context};

#[derive(clap::Args)]
pub struct Args {
    /// An image backup made with `tar -cf backup-images.tar dtr-registry-<replica-id>`, or `-`
    /// for stdin. The snapshot restores as a directory, as a tar, and as this exact tar.
    file: String,
    /// DTR replica id (default: taken from a dtr-registry-<replica> top directory).
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
        kind: "tar".into(),
        uri,
        fallback_name: "imported".into(),
        dtr_metadata: false,
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
