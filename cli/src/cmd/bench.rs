use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use stowage_backends::bench::BenchRow;
use stowage_backends::source::FsSource;
use stowage_backends::target::FsTarget;
use stowage_engine::Id;
use stowage_engine::{backup_and_restore, PipelineRow};

use super::bench_store::{self, bench_store_at, parse_size};
use super::print_json;
use crate::open::{location_join, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stores: bench_store::Args,
    /// Back up and restore this registry volume (a directory) on each store.
    #[arg(long, conflicts_with = "generate")]
    volume: Option<PathBuf>,
    /// ... or a generated registry volume of this size.
    #[arg(long, default_value = "64M")]
    generate: String,
    /// Write a bar chart of the throughputs here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    stores: Vec<BenchRow>,
    pipelines: Vec<PipelineRow>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let volume = match &args.volume {
        Some(dir) => dir.clone(),
        None => generate(&args.generate, scratch.path())?,
    };
    let (stores, names) = bench_store::measure(ctx, &args.stores).await?;
    let mut pipelines = Vec::new();
    for (location, name) in args.stores.stores.iter().zip(names) {
        if !args.stores.json && !ctx.quiet {
            eprintln!(
                "backing up and restoring {} on {location} ...",
                volume.display()
            );
        }
        // Named like the store's own rows, not the repository inside it.
        for mut row in pipeline(ctx, location, &volume, scratch.path()).await? {
            row.store = name.clone();
            pipelines.push(row);
        }
    }
    let report = Report { stores, pipelines };
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.stores.json {
        print_json(&report)?;
    } else {
        bench_store::print_table(&report.stores);
        println!();
        println!(
            "{:<32} {:<8} {:>10} {:>8} {:>10} {:>9} {:>9}",
            "store", "pipeline", "bytes", "files", "stored", "seconds", "MB/s"
        );
        for r in &report.pipelines {
            println!(
                "{:<32} {:<8} {:>10} {:>8} {:>10} {:>9.2} {:>9.1}",
                r.store,
                r.op,
                super::human_bytes(r.bytes),
                r.files,
                super::human_bytes(r.stored_bytes),
                r.seconds,
                r.mb_per_s
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(size: &str, scratch: &Path) -> anyhow::Result<PathBuf> {
    let spec = stowage_fixtures::VolumeSpec::new(1, parse_size(size)? as u64);
    let report = stowage_fixtures::generate(&spec, &scratch.join("volume"))
        .context("generating a registry volume")?;
    Ok(report.root)
}

/// A backup and a restore in a fresh repository under `location`, removed afterwards.
async fn pipeline(
    ctx: &Context,
    location: &str,
    volume: &Path,
    scratch: &Path,
) -> anyhow::Result<Vec<PipelineRow>> {
    let run = Id::random().short();
    let repo_location = match location {
        "memory://" | "memory" => location.to_string(),
        _ => location_join(location, &format!("stowage-bench-{run}")),
    };
    let store = bench_store_at(ctx, &repo_location).await?;
    let target = scratch.join(format!("restore-{run}"));
    std::fs::create_dir_all(&target)?;
    let source = FsSource::new(volume).with_context(|| format!("reading {}", volume.display()))?;
    let result = backup_and_restore(
        Arc::clone(&store),
        Arc::new(source),
        Arc::new(FsTarget::new(&target)?),
    )
    .await;
    // Whatever happened, leave nothing behind.
    if Path::new(&repo_location).is_dir() {
        std::fs::remove_dir_all(&repo_location)?;
    } else {
        for meta in store.list("").await? {
            store.delete(&meta.key).await?;
        }
    }
    std::fs::remove_dir_all(&target)?;
    Ok(result?)
}

/// A grouped bar chart: for each measurement (put and get of the largest object size,
/// backup, restore), one bar per store, in MB/s on a log scale.
fn chart(report: &Report) -> String {
    let largest = report
        .stores
        .iter()
        .map(|r| r.object_size)
        .max()
        .unwrap_or(0);
    let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    let mut add =
        |group: String, store: &str, value: f64| match groups.iter_mut().find(|(g, _)| *g == group)
        {
            Some((_, bars)) => bars.push((store.to_string(), value)),
            None => groups.push((group, vec![(store.to_string(), value)])),
        };
    for r in report.stores.iter().filter(|r| r.object_size == largest) {
        if r.op == "put" || r.op == "get" {
            let size = super::human_bytes(r.object_size);
            add(format!("{} {size}", r.op), &r.store, r.mb_per_s);
        }
    }
    for r in &report.pipelines {
        add(r.op.to_string(), &r.store, r.mb_per_s);
    }
    let stores: Vec<String> = {
        let mut seen = Vec::new();
        for (_, bars) in &groups {
            for (store, _) in bars {
                if !seen.contains(store) {
                    seen.push(store.clone());
                }
            }
        }
        seen
    };
    let max = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, v)| *v))
        .fold(1.0, f64::max);
    const COLORS: [&str; 6] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
    ];
    let (bar, gap, top, plot_h, left) = (28.0, 36.0, 40.0, 300.0, 60.0);
    let group_w = bar * stores.len().max(1) as f64 + gap;
    let width = left + group_w * groups.len().max(1) as f64 + 20.0;
    let height = top + plot_h + 60.0 + 18.0 * stores.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">stowage bench: throughput in MB/s, log scale (higher is better)</text>\n\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1:.0}\" y2=\"{y0}\" stroke=\"#333\"/>\n",
        y0 = top + plot_h,
        x1 = width - 10.0
    );
    for (g, (name, bars)) in groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w;
        for (store, value) in bars {
            let s = stores.iter().position(|x| x == store).unwrap_or(0);
            // Log scale: memory runs orders of magnitude above disks and buckets.
            let h = (value + 1.0).log10() / (max + 1.0).log10() * plot_h;
            let x = x0 + s as f64 * bar;
            let y = top + plot_h - h;
            svg += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{c}\">\
                 <title>{store}: {value:.1} MB/s</title></rect>\n\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"9\" text-anchor=\"middle\">{value:.0}</text>\n",
                w = bar - 4.0,
                c = COLORS[s % COLORS.len()],
                store = xml(store),
                tx = x + (bar - 4.0) / 2.0,
                ty = y - 3.0,
            );
        }
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x0 + (group_w - gap) / 2.0,
            top + plot_h + 16.0,
            xml(name)
        );
    }
    for (s, store) in stores.iter().enumerate() {
        let y = top + plot_h + 40.0 + 18.0 * s as f64;
        svg += &format!(
            "<rect x=\"{left}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{}</text>\n",
            y - 10.0,
            COLORS[s % COLORS.len()],
            left + 18.0,
            y,
            xml(store)
        );
    }
    svg + "</svg>\n"
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
