use std::process::ExitCode;

use stowage_engine::{prune, PruneOptions, PruneReport};

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// How long a pack stays marked before a later prune may delete it (e.g. 24h, 7d, 0s).
    /// Make it longer than your longest backup: a backup that relies on a marked pack and
    /// would finish within 10 minutes of its deletion is refused rather than left broken.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace: std::time::Duration,
    /// Repack packs with at least this percentage of their bytes unneeded.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(1..=100))]
    repack_unused: u8,
    /// Show what would be marked, repacked and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let opts = PruneOptions {
        grace: chrono::Duration::from_std(args.grace)
            .map_err(|_| anyhow::anyhow!("--grace {:?} is too long", args.grace))?,
        repack_unused: f64::from(args.repack_unused) / 100.0,
        dry_run: args.dry_run,
        ..PruneOptions::default()
    };
    let bars = ctx.bars();
    let report = prune(repo, &opts, chrono::Utc::now(), bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&report)?;
    } else {
        print(&report);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print(r: &PruneReport) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots need {:.1} MiB of the {:.1} MiB in {} packs",
        r.snapshots,
        mib(r.needed_bytes),
        mib(r.stored_bytes),
        r.packs
    );
    println!(
        "{} packs {would}deleted ({:.1} MiB), {} {would}marked, {} {would}repacked ({} blobs, \
         {:.1} MiB moved), {} unmarked (needed again)",
        r.packs_deleted,
        mib(r.bytes_deleted),
        r.packs_marked,
        r.packs_repacked,
        r.blobs_repacked,
        mib(r.bytes_repacked),
        r.packs_unmarked
    );
    if let Some(next) = r.next_deletion {
        println!(
            "{} marked packs ({:.1} MiB) can be deleted by a prune from {}",
            r.packs_pending,
            mib(r.bytes_pending),
            next.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if r.packs_unindexed > 0 {
        println!(
            "{} packs are in no index (an interrupted or running backup's): marked, deleted \
             after the grace period unless indexed by then",
            r.packs_unindexed
        );
    }
    if r.packs_missing > 0 {
        println!(
            "{} packs named by index files were missing from the store and no snapshot needs \
             them: dropped from the index",
            r.packs_missing
        );
    }
}
