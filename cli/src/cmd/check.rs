use std::process::ExitCode;

use stowage_engine::{check_with, DamagedPack, DataSubset, PackDamage};

use super::print_json;
use crate::open::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Read every pack and authenticate every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only a subset of the packs, as restic does: `n/t` (part n of t: a nightly
    /// `$((day % 7 + 1))/7` reads everything in a week), `x%` (random packs), or a size
    /// (`500MiB`, `2G`: random packs up to it). Implies --read-data.
    #[arg(long, value_parser = parse_subset)]
    read_data_subset: Option<DataSubset>,
    #[arg(long)]
    json: bool,
    /// Name every file a damaged pack breaks (the first few otherwise).
    #[arg(long, short)]
    verbose: bool,
}

/// Paths named per damaged pack without `--verbose`.
const PATHS_SHOWN: usize = 5;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    let bars = ctx.bars();
    let read_data = args.read_data || args.read_data_subset.is_some();
    let report = check_with(repo, read_data, args.read_data_subset, bars.clone()).await?;
    bars.finish();
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "{} snapshots, {} trees, {} packs checked{}",
            report.snapshots,
            report.trees,
            report.packs,
            if read_data {
                format!(
                    "; {} packs and {} blobs read",
                    report.packs_read, report.blobs_read
                )
            } else {
                String::new()
            }
        );
        for note in &report.notes {
            println!("note: {note}");
        }
        for error in &report.errors {
            eprintln!("error: {error}");
        }
        for damaged in &report.damaged_packs {
            print_damaged(damaged, args.verbose);
        }
        for repair in &report.repairs {
            eprintln!("to repair: {repair}");
        }
    }
    if report.is_ok() {
        if !args.json {
            println!("no errors found");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "check found {} error(s) and {} damaged pack(s)",
            report.errors.len(),
            report.damaged_packs.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// One line for the pack, one for what it breaks, then the paths (the first few unless
/// `verbose`).
fn print_damaged(damaged: &DamagedPack, verbose: bool) {
    match damaged.damage {
        PackDamage::Missing => eprintln!("error: pack {} is missing", damaged.pack),
        _ => eprintln!(
            "error: pack {} is damaged: {}",
            damaged.pack, damaged.reason
        ),
    }
    let snapshots: std::collections::BTreeSet<&str> = damaged
        .affected
        .iter()
        .filter_map(|a| a.split_once(':').map(|(snapshot, _)| snapshot))
        .collect();
    match damaged.affected.len() {
        0 => eprintln!("  no snapshot needs it"),
        n => eprintln!(
            "  {n} file(s) or directories in {} snapshot(s) need it",
            snapshots.len()
        ),
    }
    let shown = if verbose { usize::MAX } else { PATHS_SHOWN };
    for path in damaged.affected.iter().take(shown) {
        eprintln!("  affects {path}");
    }
    if damaged.affected.len() > shown {
        eprintln!(
            "  ... and {} more (`--verbose` names them all)",
            damaged.affected.len() - shown
        );
    }
}

/// `n/t`, `x%` or a size with an optional unit (K, M, G, T, binary either way).
fn parse_subset(text: &str) -> Result<DataSubset, String> {
    let bad =
        || format!("{text:?}: expected n/t (e.g. 2/7), a percentage (10%) or a size (500MiB)");
    if let Some((n, t)) = text.split_once('/') {
        let (n, t): (u32, u32) = (n.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?);
        if t == 0 || n == 0 || n > t {
            return Err(format!("{text:?}: n/t needs 1 <= n <= t"));
        }
        return Ok(DataSubset::Part { n, t });
    }
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent.parse().map_err(|_| bad())?;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(format!("{text:?}: a percentage above 0 and at most 100"));
        }
        return Ok(DataSubset::Share(percent / 100.0));
    }
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = text[digits.len()..].to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .map(DataSubset::Bytes)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse_as_restic_writes_them() {
        assert_eq!(parse_subset("2/7"), Ok(DataSubset::Part { n: 2, t: 7 }));
        assert_eq!(parse_subset("10%"), Ok(DataSubset::Share(0.1)));
        assert_eq!(parse_subset("500MiB"), Ok(DataSubset::Bytes(500 << 20)));
        assert_eq!(parse_subset("2G"), Ok(DataSubset::Bytes(2 << 30)));
        assert_eq!(parse_subset("4096"), Ok(DataSubset::Bytes(4096)));
        for bad in ["0/7", "8/7", "1/0", "0%", "150%", "12XB", "", "x/y"] {
            assert!(parse_subset(bad).is_err(), "{bad}");
        }
    }
}
