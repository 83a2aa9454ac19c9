use std::process::ExitCode;

use stowage_engine::SnapshotList;

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let SnapshotList {
        mut snapshots,
        damaged,
    } = repo.snapshot_list().await?;
    let filter = args.filter.engine();
    snapshots.retain(|(_, s)| filter.matches(s));
    if args.json {
        let mut rows: Vec<_> = snapshots
            .iter()
            .map(|(id, s)| {
                let mut row = serde_json::to_value(s).unwrap_or_default();
                row["id"] = serde_json::json!(id);
                row["short_id"] = serde_json::json!(id.short());
                row
            })
            .collect();
        // Damaged objects: only what is known of them.
        rows.extend(damaged.iter().map(
            |d| serde_json::json!({ "id": d.id, "short_id": d.id.short(), "damaged": d.reason }),
        ));
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {:<16}  source",
        "id", "time (local)", "host", "replica", "size", "tags"
    );
    for (id, s) in &snapshots {
        let tags = match s.tags.is_empty() {
            true => "-".to_string(),
            false => s.tags.join(","),
        };
        println!(
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {:<16}  {}",
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.replica_id.as_deref().unwrap_or("-"),
            human_bytes(s.summary.bytes),
            tags,
            s.source.uri
        );
    }
    for d in &damaged {
        println!("{:<8}  DAMAGED: {}", d.id.short(), d.reason);
    }
    println!("{} snapshot(s)", snapshots.len());
    for d in &damaged {
        eprintln!("warning: {}", d.warning());
    }
    Ok(ExitCode::SUCCESS)
}
