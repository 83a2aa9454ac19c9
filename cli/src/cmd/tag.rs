use std::process::ExitCode;

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to change (ids, prefixes, `latest`); every selected one when none given.
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: super::Filter,
    /// Add this tag (repeatable).
    #[arg(long = "add")]
    add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove")]
    remove: Vec<String>,
    /// Replace all tags by these (repeatable; `--set ''` clears them).
    #[arg(long = "set", conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        anyhow::bail!("nothing to change: give --add, --remove or --set");
    }
    let repo = ctx.open().await?;
    let chosen = match args.snapshots.is_empty() {
        true => args.filter.snapshots(&repo).await?,
        false => {
            let mut chosen = Vec::new();
            for spec in &args.snapshots {
                chosen.push(repo.find_snapshot_in(spec, &args.filter.engine()).await?);
            }
            chosen
        }
    };
    let mut changed = Vec::new();
    for (id, mut snapshot) in chosen {
        let before = snapshot.tags.clone();
        if !args.set.is_empty() {
            snapshot.tags = args.set.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        snapshot.tags.retain(|t| !args.remove.contains(t));
        for tag in &args.add {
            if !snapshot.tags.contains(tag) {
                snapshot.tags.push(tag.clone());
            }
        }
        if snapshot.tags == before {
            continue;
        }
        let new = repo.rewrite_snapshot(id, &snapshot).await?;
        if !args.json {
            println!(
                "snapshot {} is now {}: tags {}",
                id.short(),
                new.short(),
                match snapshot.tags.is_empty() {
                    true => "(none)".to_string(),
                    false => snapshot.tags.join(","),
                }
            );
        }
        changed.push(serde_json::json!({ "old": id, "new": new, "tags": snapshot.tags }));
    }
    if args.json {
        print_json(&changed)?;
    } else if changed.is_empty() {
        println!("no snapshot changed");
    }
    Ok(ExitCode::SUCCESS)
}
