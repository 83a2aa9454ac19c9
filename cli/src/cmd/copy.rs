use std::path::PathBuf;
use std::process::ExitCode;

use stowage_engine::Error;
use stowage_engine::Repository;
use stowage_engine::{copy, copy_plan as plan};

use super::{human_bytes, print_json};
use crate::open::{hostname, password_from, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Destination repository: a directory or s3://bucket/prefix. When it does not exist it
    /// is created with this repository's keys and chunker settings, so the two deduplicate
    /// against each other.
    #[arg(long)]
    to: String,
    /// Password file of the destination (else STOWAGE_TO_PASSWORD, else this repository's
    /// password).
    #[arg(long, env = "STOWAGE_TO_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
    /// Snapshots to copy: ids, unique prefixes or `latest` (default: all).
    snapshots: Vec<String>,
    /// Show what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let password = ctx.password(false)?;
    let src = ctx.open_repository(ctx.store().await?, &password).await?;
    let selection = match args.snapshots.is_empty() {
        true => args.filter.snapshots(&src).await?,
        false => {
            let mut chosen = Vec::new();
            for spec in &args.snapshots {
                chosen.push(src.find_snapshot_in(spec, &args.filter.engine()).await?);
            }
            chosen
        }
    };
    let dst_password = match args.to_password_file.is_some()
        || std::env::var_os("STOWAGE_TO_PASSWORD").is_some()
    {
        true => password_from(
            args.to_password_file.as_deref(),
            None,
            "STOWAGE_TO_PASSWORD",
            false,
        )?,
        false => password,
    };
    // A dry run creates nothing, not even the destination's directory.
    let dst_store = match args.dry_run {
        false => Some(ctx.create_store(&args.to).await?),
        true => match ctx.open_store(&args.to).await {
            Ok(store) => Some(store),
            Err(e) if matches!(e.downcast_ref(), Some(Error::NoRepository { .. })) => None,
            Err(e) => return Err(e),
        },
    };
    let exists = match &dst_store {
        None => false,
        Some(store) => match store.head("config").await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        },
    };
    let dst_store = match (exists, dst_store) {
        (true, Some(store)) => store,
        (_, store) => {
            if args.dry_run {
                println!(
                    "{} holds no repository: it would be created and {} snapshots copied",
                    args.to,
                    selection.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let store = store.expect("created unless a dry run");
            let config =
                Repository::init_from(store.as_ref(), &dst_password, &hostname(), &src).await?;
            if !args.json {
                println!(
                    "created repository {} at {} (keys shared with {})",
                    &config.id[..8],
                    args.to,
                    &src.config().id[..8]
                );
            }
            store
        }
    };
    let dst = ctx.open_repository(dst_store, &dst_password).await?;
    if args.dry_run {
        let plan = plan(&src, &dst, selection).await?;
        println!(
            "would copy {} snapshots ({} already there): {} blobs, {}",
            plan.snapshots.len(),
            plan.skipped.len(),
            plan.blobs,
            human_bytes(plan.bytes)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let bars = ctx.bars();
    let summary = copy(src, dst, selection, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "copied {} snapshots to {} ({} already there): {} blobs, {} ({} stored in {} packs)",
            summary.snapshots_copied,
            args.to,
            summary.snapshots_skipped,
            summary.blobs_copied,
            human_bytes(summary.bytes_copied),
            human_bytes(summary.stored_bytes),
            summary.packs
        );
    }
    Ok(ExitCode::SUCCESS)
}
