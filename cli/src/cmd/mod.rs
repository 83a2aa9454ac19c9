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
mod tar_io;

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
