use std::process::ExitCode;

use stowage_engine::check;

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Read every pack and authenticate every blob.
    #[arg(long)]
    read_data: bool,
    #[arg(long)]
    json: bool,
}

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
            eprintln!(
                "error: pack {} is damaged: {}",
                damaged.pack, damaged.reason
            );
            for path in &damaged.affected {
                eprintln!("  affects {path}");
            }
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
