use std::process::ExitCode;

use stowage_engine::{Node, NodeKind, Walk};

use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: super::Filter,
    /// Snapshot: an id, a unique prefix of one, or `latest`.
    snapshot: String,
    /// Path inside the snapshot to list (default: everything).
    path: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn print(node: &Node, path: &str, json: bool) {
    if json {
        let row = serde_json::json!({
            "path": path, "type": node.kind, "mode": node.mode, "uid": node.uid, "gid": node.gid,
            "size": node.size, "mtime": node.mtime, "mtime_ns": node.mtime_ns,
        });
        println!("{row}");
        return;
    }
    let time = chrono::DateTime::from_timestamp(node.mtime, node.mtime_ns)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let link = node
        .target
        .as_ref()
        .map(|t| format!(" -> {}", t.lossy()))
        .unwrap_or_default();
    println!(
        "{} {:>5}/{:<5} {:>12} {} {path}{link}",
        mode_string(node),
        node.uid,
        node.gid,
        node.size,
        time
    );
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (_, snapshot) = repo
        .find_snapshot_in(&args.snapshot, &args.filter.engine())
        .await?;
    let path = args.path.as_deref().unwrap_or("");
    let mut walk = Walk::at(&repo, &snapshot, path).await?;
    while let Some((rel, node)) = walk.next().await? {
        print(&node, &rel.to_string_lossy(), args.json);
    }
    Ok(ExitCode::SUCCESS)
}
