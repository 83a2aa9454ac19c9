//! Registries of many small link files (issue 16): a backup and its restore are exact, a
//! later night reads only what its pushes wrote, and the backup holds a bounded number of
//! directories in memory however many the tree has. The suite runs a registry of 10,000
//! files; `cargo test -p stowage-engine --test scale -- --ignored` runs 100,000.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{open, restore_into, PASSWORD};
use stowage_backends::fs::FsStore;
use stowage_backends::source::FsSource;
use stowage_backends::MemoryKv;
use stowage_engine::{backup, BackupOptions, Progress, Repository, Snapshot};
use stowage_fixtures::{generate_links, LinksSpec};

/// Records the most directories the backup held in memory at once.
#[derive(Default)]
struct Watch {
    dirs_held: AtomicU64,
}

impl Progress for Watch {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn warn(&self, message: &str) {
        panic!("unexpected warning: {message}");
    }
    fn gauge(&self, name: &'static str, value: u64) {
        if name == "backup.dirs_held" {
            self.dirs_held.fetch_max(value, Ordering::Relaxed);
        }
    }
}

/// Directories listed ahead of the walk in these backups.
const READ_AHEAD: usize = 32;

/// Most directories a backup may hold: those listed ahead, those being finished beside the
/// walk (64), and the walk's own path from the root (the registry is 12 deep).
const HELD_BOUND: u64 = READ_AHEAD as u64 + 64 + 16;

async fn back_up(repo: &Arc<Repository>, volume: &Path) -> (Snapshot, u64) {
    let watch = Arc::new(Watch::default());
    let opts = BackupOptions {
        read_ahead: READ_AHEAD,
        ..BackupOptions::default()
    };
    let source = Arc::new(FsSource::new(volume).unwrap());
    let (_, snap) = backup(Arc::clone(repo), source, opts, watch.clone())
        .await
        .unwrap();
    (snap, watch.dirs_held.load(Ordering::Relaxed))
}

async fn many_links_round_trip(spec: LinksSpec) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::create(dir.path().join("repo")).unwrap());
    Repository::init(store.as_ref(), PASSWORD, &Default::default())
        .await
        .unwrap();
    let repo = open(store, PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    let volumes = dir.path().join("volumes");
    let mut spec = spec;
    let volume = generate_links(&spec, &volumes).unwrap();
    outside_the_racy_window();

    let (first, held) = back_up(&repo, &volume).await;
    assert_eq!(first.summary.files, spec.files());
    assert!(
        first.summary.dirs > spec.files(),
        "{} dirs",
        first.summary.dirs
    );
    assert!(
        held <= HELD_BOUND,
        "held {held} of {} directories at once",
        first.summary.dirs
    );
    assert!(held > 1, "the gauge was reported");
    restore_and_compare(&repo, &first, &volume, &dir.path().join("night1")).await;

    // Night 2: a tenth of the repositories pushed (two layers, a revision, a tag moved).
    spec.night = 2;
    generate_links(&spec, &volumes).unwrap();
    outside_the_racy_window();
    let pushed = spec.repositories.div_ceil(10);
    let (second, held) = back_up(&repo, &volume).await;
    assert_eq!(second.summary.files, spec.files());
    // Four new links and the moved tag's `current` per push; nothing else read.
    assert_eq!(second.summary.files_read, 5 * pushed);
    assert!(held <= HELD_BOUND, "held {held} directories at once");
    restore_and_compare(&repo, &second, &volume, &dir.path().join("night2")).await;
}

/// Waits until what was just written is older than the racy margin, so that the next
/// backup's parent proves it unchanged (files changed within it are read again).
fn outside_the_racy_window() {
    let margin = stowage_engine::RACY_MARGIN.to_std().unwrap();
    std::thread::sleep(margin + std::time::Duration::from_millis(100));
}

async fn restore_and_compare(repo: &Arc<Repository>, snap: &Snapshot, volume: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    restore_into(repo, snap, out).await;
    let restored = out.join(volume.file_name().unwrap());
    let diffs = stowage_fixtures::compare::tree_differences(volume, &restored).unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_of_10k_link_files_round_trips_exactly_in_bounded_memory() {
    many_links_round_trip(LinksSpec {
        layers: 20,
        revisions: 20,
        tags: 4,
        ..LinksSpec::new(1, 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100,000 files: minutes in a debug build"]
async fn a_registry_of_100k_link_files_round_trips_exactly_in_bounded_memory() {
    many_links_round_trip(LinksSpec::new(2, 460)).await;
}
