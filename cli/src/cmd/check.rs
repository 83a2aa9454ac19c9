use std::process::ExitCode;

use stowage_engine::{check, DamagedPack, PackDamage};

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Read every pack and authenticate every blob.
    #[arg(long)]
    read_data: bool,
    #[arg(long)]
    json: bool,
    /// Name every file a damaged pack breaks (the first few otherwise).
    #[arg(long, short)]
    verbose: bool,
}

/// Paths named per damaged pack without `--verbose`.
const PATHS_SHOWN: usize = 5;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let bars = ctx.bars();
    let report = check(repo, args.read_data, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "{} snapshots, {} trees, {} packs checked{}",
            report.snapshots,
            report.trees,
            report.packs,
            if args.read_data {
                format!(
                    "; {} packs and {} blobs read",
                    report.packs_read, report.blobs_read
                )
            } else {
                String::new()
            }
        );
        for note in &report.notes {
            println!("note: {note}");
        }
        for error in &report.errors {
            eprintln!("error: {error}");
        }
        for damaged in &report.damaged_packs {
            print_damaged(damaged, args.verbose);
        }
        for repair in &report.repairs {
            eprintln!("to repair: {repair}");
        }
    }
    if report.is_ok() {
        if !args.json {
            println!("no errors found");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "check found {} error(s) and {} damaged pack(s)",
            report.errors.len(),
            report.damaged_packs.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// One line for the pack, one for what it breaks, then the paths (the first few unless
/// `verbose`).
fn print_damaged(damaged: &DamagedPack, verbose: bool) {
    match damaged.damage {
        PackDamage::Missing => eprintln!("error: pack {} is missing", damaged.pack),
        _ => eprintln!(
            "error: pack {} is damaged: {}",
            damaged.pack, damaged.reason
        ),
    }
    let snapshots: std::collections::BTreeSet<&str> = damaged
        .affected
        .iter()
        .filter_map(|a| a.split_once(':').map(|(snapshot, _)| snapshot))
        .collect();
    match damaged.affected.len() {
        0 => eprintln!("  no snapshot needs it"),
        n => eprintln!(
            "  {n} file(s) or directories in {} snapshot(s) need it",
            snapshots.len()
        ),
    }
    let shown = if verbose { usize::MAX } else { PATHS_SHOWN };
    for path in damaged.affected.iter().take(shown) {
        eprintln!("  affects {path}");
    }
    if damaged.affected.len() > shown {
        eprintln!(
            "  ... and {} more (`--verbose` names them all)",
            damaged.affected.len() - shown
        );
    }
}
