//! One module per command; each reads as: open, run the pipeline, print.

pub mod backup;
pub mod backup_metadata;
pub mod bench;
pub mod bench_store;
pub mod check;
pub mod copy;
pub mod diff;
pub mod docs;
pub mod dump;
pub mod find;
pub mod forget;
pub mod import_tar;
pub mod init;
pub mod key;
pub mod ls;
pub mod optimize;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod restore_metadata;
pub mod snapshots;
pub mod stats;
pub mod tag;
mod tar_io;

/// Which snapshots a command works on; `latest` is the latest of them.
#[derive(clap::Args, Clone, Default)]
pub struct Filter {
    /// Only snapshots made on this host (repeatable: any of them).
    #[arg(long = "host", help_heading = "Snapshot selection")]
    hosts: Vec<String>,
    /// Only snapshots with this tag; `a,b` needs both (repeatable: any of them).
    #[arg(long = "tag", help_heading = "Snapshot selection")]
    tags: Vec<String>,
    /// Only snapshots of this source, as `snapshots` shows it (repeatable).
    #[arg(long = "path", help_heading = "Snapshot selection")]
    paths: Vec<String>,
    /// Only snapshots of this DTR replica id (repeatable).
    #[arg(long = "replica", help_heading = "Snapshot selection")]
    replicas: Vec<String>,
}

impl Filter {
    pub fn engine(&self) -> stowage_engine::SnapshotFilter {
        stowage_engine::SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
            replicas: self.replicas.clone(),
        }
    }

    /// The snapshots of `repo` this filter selects, oldest first.
    pub async fn snapshots(
        &self,
        repo: &stowage_engine::Repository,
    ) -> anyhow::Result<Vec<(stowage_engine::Id, stowage_engine::Snapshot)>> {
        let filter = self.engine();
        let mut snapshots = repo.snapshots().await?;
        snapshots.retain(|(_, s)| filter.matches(s));
        Ok(snapshots)
    }
}

/// Bytes as a human reads them (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
