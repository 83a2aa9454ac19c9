use std::process::ExitCode;

use anyhow::bail;
use stowage_engine::Repository;
use stowage_engine::{Node, NodeKind};

use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
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

/// Lists `node` at `path` and everything under it, depth first in name order.
async fn walk(repo: &Repository, node: Node, path: String, json: bool) -> anyhow::Result<()> {
    let mut stack = vec![(node, path)];
    while let Some((node, path)) = stack.pop() {
        print(&node, &path, json);
        if let Some(subtree) = node.subtree {
            let tree = repo.load_tree(&subtree).await?;
            for child in tree.nodes.into_iter().rev() {
                let child_path = format!("{path}/{}", child.name.lossy());
                stack.push((child, child_path));
            }
        }
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let (_, snapshot) = repo.find_snapshot(&args.snapshot).await?;
    let mut nodes = repo.load_tree(&snapshot.tree).await?.nodes;
    let wanted: Vec<&str> = args
        .path
        .as_deref()
        .unwrap_or("")
        .split('/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut path = String::new();
    let Some((first, rest)) = wanted.split_first() else {
        for node in nodes {
            let name = node.name.lossy();
            walk(&repo, node, name, args.json).await?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut current = None;
    for (i, part) in std::iter::once(first).chain(rest.iter()).enumerate() {
        let Some(node) = nodes.into_iter().find(|n| n.name.0 == part.as_bytes()) else {
            bail!(
                "{} is not in snapshot {}",
                wanted[..=i].join("/"),
                args.snapshot
            );
        };
        path = if path.is_empty() {
            part.to_string()
        } else {
            format!("{path}/{part}")
        };
        nodes = match node.subtree {
            Some(sub) if i + 1 < wanted.len() => repo.load_tree(&sub).await?.nodes,
            _ => Vec::new(),
        };
        current = Some(node);
    }
    if let Some(node) = current {
        walk(&repo, node, path, args.json).await?;
    }
    Ok(ExitCode::SUCCESS)
}
