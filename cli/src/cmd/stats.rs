use std::process::ExitCode;

use stowage_engine::stats;

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let s = stats(&repo).await?;
    if args.json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshots:          {}", s.snapshots);
    println!("packs:              {}", s.packs);
    println!(
        "unique blobs:       {} ({})",
        s.blobs,
        human_bytes(s.unique_bytes)
    );
    println!("stored:             {}", human_bytes(s.stored_bytes));
    println!("all snapshots size: {}", human_bytes(s.logical_bytes));
    println!("dedup ratio:        {:.2}x", s.dedup_ratio);
    println!("compression ratio:  {:.3}x", s.compression_ratio);
    if let Some(latest) = &s.latest {
        println!(
            "latest backup:      read {} of {}, added {} new, stored {}",
            human_bytes(latest.bytes_read),
            human_bytes(latest.bytes),
            human_bytes(latest.new_bytes),
            human_bytes(latest.stored_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
