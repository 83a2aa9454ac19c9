use std::process::ExitCode;

use stowage_engine::forget::{forget, plan, remove, KeepPolicy};

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Remove these snapshots (ids or unique id prefixes) instead of applying keep rules.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the N newest hours with snapshots (UTC).
    #[arg(long, default_value_t = 0)]
    keep_hourly: usize,
    /// ... of each of the N newest days.
    #[arg(long, default_value_t = 0)]
    keep_daily: usize,
    /// ... of each of the N newest ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: usize,
    /// ... of each of the N newest months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: usize,
    /// ... of each of the N newest years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: usize,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Keep every snapshot less than this much older than its group's newest (e.g. 14d,
    /// 1y 6months).
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_within: Option<std::time::Duration>,
    /// Prune after forgetting (with prune's defaults; run `prune` for its options).
    #[arg(long, conflicts_with = "dry_run")]
    prune: bool,
    /// Print the plan; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        tags: args.keep_tags,
        within: args
            .keep_within
            .map(chrono::Duration::from_std)
            .transpose()
            .map_err(|_| anyhow::anyhow!("--keep-within is too long"))?,
    };
    if !args.snapshots.is_empty() {
        if !policy.is_empty() {
            anyhow::bail!("give either snapshots to remove or keep rules, not both");
        }
        let mut ids = Vec::new();
        for spec in &args.snapshots {
            // Damaged ones too: removing them is how an operator clears them.
            ids.push(repo.find_snapshot_id(spec).await?);
        }
        ids.sort();
        ids.dedup();
        if args.json {
            print_json(&serde_json::json!({ "dry_run": args.dry_run, "removed": ids }))?;
        }
        if !args.dry_run {
            remove(&repo, &ids).await?;
        }
        if !args.json {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!("{verb} {} snapshots", ids.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let groups = plan(&args.filter.snapshots(&repo).await?, &policy)?;
    if args.json {
        print_json(&serde_json::json!({ "dry_run": args.dry_run, "groups": groups }))?;
    } else {
        for group in &groups {
            let removed = group.removed().count();
            println!(
                "{} {}: keep {} of {}",
                group.host,
                group.source,
                group.snapshots.len() - removed,
                group.snapshots.len()
            );
            for d in &group.snapshots {
                let verdict = match d.reasons.is_empty() {
                    true => "remove".to_string(),
                    false => format!("keep ({})", d.reasons.join(", ")),
                };
                println!(
                    "  {}  {}  {verdict}",
                    d.id.short(),
                    d.time.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let removed = forget(&repo, &groups).await?;
    if !args.json {
        match args.prune {
            true => println!("removed {removed} snapshots; pruning"),
            false => println!(
                "removed {removed} snapshots; `stowage prune` frees the data only they used"
            ),
        }
    }
    if args.prune {
        let bars = ctx.bars();
        let opts = stowage_engine::PruneOptions::default();
        let report = stowage_engine::prune(repo, &opts, chrono::Utc::now(), bars.clone()).await?;
        bars.finish();
        match args.json {
            true => print_json(&report)?,
            false => super::prune::print(&report),
        }
    }
    Ok(ExitCode::SUCCESS)
}
