use std::process::ExitCode;

use stowage_engine::{
    repair_index, repair_snapshots, RepairIndexReport, RepairSnapshotsOptions,
    RepairSnapshotsReport,
};

use super::print_json;
use crate::open::Context;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Rebuild the index from the packs' own headers: after an index file was damaged or
    /// deleted, or packs went missing. The old index files go once the new ones are stored.
    Index(IndexArgs),
    /// Rewrite the snapshots that need blobs no pack holds any more, without the files
    /// lost (a lost directory is kept, empty); the repaired ones are tagged `repaired`.
    Snapshots(SnapshotsArgs),
}

#[derive(clap::Args)]
pub struct IndexArgs {
    /// Read every pack whole and authenticate every blob: the blobs of a damaged pack that
    /// still authenticate move to new packs, the others leave the index.
    #[arg(long)]
    read_data: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    /// Show what would be rewritten and lost; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove the damaged originals (their repaired copies stay), the snapshots that
    /// cannot be repaired, and snapshot objects that do not load.
    #[arg(long)]
    forget: bool,
    /// Name every lost file (the first few per snapshot otherwise).
    #[arg(long, short)]
    verbose: bool,
    #[arg(long)]
    json: bool,
}

/// Lost paths named per snapshot without `--verbose`.
const PATHS_SHOWN: usize = 5;

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let bars = ctx.bars();
    match command {
        Command::Index(args) => {
            let report = repair_index(repo, args.read_data, bars.clone()).await?;
            bars.finish();
            match args.json {
                true => print_json(&report)?,
                false => print_index(&report),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots(args) => {
            let opts = RepairSnapshotsOptions {
                dry_run: args.dry_run,
                forget: args.forget,
            };
            let report = repair_snapshots(repo, opts, bars.clone()).await?;
            bars.finish();
            match args.json {
                true => print_json(&report)?,
                false => print_snapshots(&report, args.verbose, args.dry_run),
            }
            // Snapshots left broken (not repairable, not removed) are still an error.
            let left = report
                .repaired
                .iter()
                .any(|r| r.unrepairable.is_some() && !r.removed);
            Ok(match left && !args.dry_run {
                true => ExitCode::FAILURE,
                false => ExitCode::SUCCESS,
            })
        }
    }
}

fn print_index(r: &RepairIndexReport) {
    println!(
        "{} packs read: {} indexed ({} blobs), {} marked by a prune left out",
        r.packs, r.indexed_packs, r.indexed_blobs, r.marked_packs
    );
    for (pack, why) in &r.unreadable {
        eprintln!("pack {pack} is left out: {why}");
    }
    for (pack, why) in &r.damaged {
        eprintln!("pack {pack} is damaged and left out: {why}");
    }
    if !r.damaged.is_empty() {
        println!(
            "{} blob(s) of damaged packs stored again, {} lost",
            r.salvaged_blobs, r.lost_blobs
        );
    }
    for pack in &r.missing {
        println!("pack {pack} is missing: the new index no longer names it");
    }
    println!(
        "{} index file(s) written, {} old ones removed",
        r.index_files_written, r.index_files_removed
    );
    if r.lost_blobs > 0 || !r.unreadable.is_empty() || !r.missing.is_empty() {
        println!(
            "next: back up the same sources (blobs they still hold are stored again), then \
             `stowage repair snapshots` for what stays lost"
        );
    }
}

fn print_snapshots(r: &RepairSnapshotsReport, verbose: bool, dry_run: bool) {
    let would = if dry_run { "would be " } else { "" };
    for entry in &r.repaired {
        let id = entry.snapshot.short();
        match (&entry.unrepairable, entry.repaired) {
            (Some(why), _) => eprintln!("snapshot {id} cannot be repaired: {why}"),
            (None, Some(new)) => println!(
                "snapshot {id} repaired as {}: {} path(s) lost",
                new.short(),
                entry.lost.len()
            ),
            (None, None) => println!(
                "snapshot {id} {would}repaired: {} path(s) lost",
                entry.lost.len()
            ),
        }
        let shown = if verbose { usize::MAX } else { PATHS_SHOWN };
        for path in entry.lost.iter().take(shown) {
            println!("  lost {path}");
        }
        if entry.lost.len() > shown {
            println!(
                "  ... and {} more (`--verbose` names them all)",
                entry.lost.len() - shown
            );
        }
        if entry.removed {
            println!("  snapshot {id} removed");
        }
    }
    for id in &r.damaged {
        match r.damaged_removed {
            true => println!("damaged snapshot object {} removed", id.short()),
            false => eprintln!(
                "snapshot object {} does not load; `--forget` removes it",
                id.short()
            ),
        }
    }
    if r.repaired.is_empty() {
        println!("{} snapshots checked: none needs a lost blob", r.snapshots);
    }
}
