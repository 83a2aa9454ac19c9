use std::process::ExitCode;

use stowage_engine::{find_digest, find_paths};

use super::{human_bytes, print_json};
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Paths to find: `*` and `?` within a name, `**` across directories; without a `/`,
    /// matched against names alone (`find 'link'`, `find '**/_manifests/tags/v1'`).
    #[arg(required_unless_present = "digest", conflicts_with = "digest")]
    pattern: Option<String>,
    /// The registry blob (layer, config or manifest) with this digest: which snapshots
    /// hold it, e.g. which nights held a layer with a vulnerability.
    #[arg(long)]
    digest: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let snapshots = args.filter.snapshots(&repo).await?;
    let found = match (&args.digest, &args.pattern) {
        (Some(digest), _) => find_digest(&repo, &snapshots, digest).await?,
        (None, Some(pattern)) => find_paths(&repo, &snapshots, pattern).await?,
        (None, None) => anyhow::bail!("give a pattern or --digest"),
    };
    if args.json {
        print_json(&found)?;
    } else {
        for hit in &found {
            let time = hit
                .time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S");
            let size = match hit.path.ends_with('/') {
                true => String::new(),
                false => human_bytes(hit.size),
            };
            println!("{}  {time}  {}  {size}", hit.snapshot.short(), hit.path);
        }
        if found.is_empty() {
            eprintln!("found in none of {} snapshots", snapshots.len());
        }
    }
    // Like grep: nothing found is a status of its own for scripts.
    Ok(match found.is_empty() {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    })
}
