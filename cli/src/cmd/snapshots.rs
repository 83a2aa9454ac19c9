use std::process::ExitCode;

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let snapshots = repo.snapshots().await?;
    if args.json {
        let rows: Vec<_> = snapshots
            .iter()
            .map(|(id, s)| {
                let mut row = serde_json::to_value(s).unwrap_or_default();
                row["id"] = serde_json::json!(id);
                row["short_id"] = serde_json::json!(id.short());
                row
            })
            .collect();
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  source",
        "id", "time", "host", "replica", "size"
    );
    for (id, s) in &snapshots {
        println!(
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.replica_id.as_deref().unwrap_or("-"),
            human_bytes(s.summary.bytes),
            s.source.uri
        );
    }
    println!("{} snapshot(s)", snapshots.len());
    Ok(ExitCode::SUCCESS)
}
