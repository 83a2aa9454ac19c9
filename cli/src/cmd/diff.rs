use std::process::ExitCode;

use stowage_engine::diff;

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// The earlier snapshot: an id, a unique prefix of one, or `latest`.
    before: String,
    /// The later snapshot.
    after: String,
    /// Print the differences as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let filter = args.filter.engine();
    let (_, a) = repo.find_snapshot_in(&args.before, &filter).await?;
    let (_, b) = repo.find_snapshot_in(&args.after, &filter).await?;
    let d = diff(&repo, &a, &b).await?;
    if args.json {
        print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &d.repositories_added {
        println!("+ repository {r}");
    }
    for r in &d.repositories_removed {
        println!("- repository {r}");
    }
    for t in &d.tags {
        match (&t.from, &t.to) {
            (None, Some(to)) => println!("+ tag {}:{} -> {to}", t.repository, t.tag),
            (Some(from), None) => println!("- tag {}:{} (was {from})", t.repository, t.tag),
            (Some(from), Some(to)) => {
                println!("~ tag {}:{} {from} -> {to}", t.repository, t.tag)
            }
            (None, None) => {}
        }
    }
    let total = |blobs: &[stowage_engine::BlobChange]| blobs.iter().map(|b| b.size).sum::<u64>();
    println!(
        "blobs: {} added ({}), {} removed ({})",
        d.blobs_added.len(),
        human_bytes(total(&d.blobs_added)),
        d.blobs_removed.len(),
        human_bytes(total(&d.blobs_removed))
    );
    if d.other_registry_files > 0 {
        println!("other registry files changed: {}", d.other_registry_files);
    }
    for (sign, paths) in [
        ("+", &d.paths_added),
        ("-", &d.paths_removed),
        ("M", &d.paths_changed),
    ] {
        for p in paths {
            println!("{sign} {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
