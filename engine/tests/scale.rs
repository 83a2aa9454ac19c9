//! Registries of many small link files (issue 16): a backup and its restore are exact, a
//! later night reads only what its pushes wrote, and the backup holds a bounded number of
//! directories in memory however many the tree has. Check and prune then run with a sort
//! budget of 4 KiB, so that every set they keep goes through files on disk (`extsort`), and
//! must find every tree once and keep every blob the remaining snapshot needs. The suite runs
//! a registry of 10,000 files; `cargo test -p stowage-engine --test scale -- --ignored` runs
//! 100,000.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{open, restore_into, PASSWORD};
use stowage_backends::fs::FsStore;
use stowage_backends::source::FsSource;
use stowage_backends::MemoryKv;
use stowage_engine::{
    backup, check, prune, BackupOptions, Id, NoProgress, Progress, PruneOptions, Repository,
    Snapshot, Walk,
};
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

/// Most directories a backup may hold: those listed ahead (and one batch of 8 the walk
/// lists at once when the limit is taken), those being finished beside the walk (64), and the
/// walk's own path from the root (the registry is 12 deep).
const HELD_BOUND: u64 = READ_AHEAD as u64 + 8 + 64 + 16;

async fn back_up(repo: &Arc<Repository>, volume: &Path) -> (Id, Snapshot, u64) {
    let watch = Arc::new(Watch::default());
    let opts = BackupOptions {
        read_ahead: READ_AHEAD,
        ..BackupOptions::default()
    };
    let source = Arc::new(FsSource::new(volume).unwrap());
    let (id, snap) = backup(Arc::clone(repo), source, opts, watch.clone())
        .await
        .unwrap();
    (id, snap, watch.dirs_held.load(Ordering::Relaxed))
}

/// A new repository in a temporary directory, with sorts of 4 KiB: every set check and prune
/// keep goes through files.
async fn tiny_sorts_and_a_repository() -> (tempfile::TempDir, Arc<Repository>) {
    // Read once, before the first sort of this process; every test here sets the same.
    std::env::set_var("STOWAGE_SORT_MEMORY", "4096");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::create(dir.path().join("repo")).unwrap());
    Repository::init(store.as_ref(), PASSWORD, &Default::default())
        .await
        .unwrap();
    let repo = open(store, PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    (dir, repo)
}

async fn many_links_round_trip(spec: LinksSpec) {
    let (dir, repo) = tiny_sorts_and_a_repository().await;
    let volumes = dir.path().join("volumes");
    let mut spec = spec;
    let volume = generate_links(&spec, &volumes).unwrap();
    outside_the_racy_window();

    let (first_id, first, held) = back_up(&repo, &volume).await;
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
    let (_, second, held) = back_up(&repo, &volume).await;
    assert_eq!(second.summary.files, spec.files());
    // Four new links and the moved tag's `current` per push; nothing else read.
    assert_eq!(second.summary.files_read, 5 * pushed);
    assert!(held <= HELD_BOUND, "held {held} directories at once");
    restore_and_compare(&repo, &second, &volume, &dir.path().join("night2")).await;

    // Check visits every distinct tree of both nights once.
    let report = check(Arc::clone(&repo), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    let trees = distinct_trees(&repo, &[&first, &second]).await;
    assert_eq!(report.trees, trees.len());

    // Night 1 forgotten and pruned, every pack with a byte unneeded repacked: what night 2
    // needs is kept, and only that.
    stowage_engine::forget::remove(&repo, &[first_id])
        .await
        .unwrap();
    let opts = PruneOptions {
        grace: Duration::hours(1),
        repack_unused: 1e-9,
        ..PruneOptions::default()
    };
    let marked = prune(Arc::clone(&repo), &opts, Utc::now(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(marked.blobs_repacked > 0, "{marked:?}");
    let later = Utc::now() + Duration::hours(2);
    let deleted = prune(Arc::clone(&repo), &opts, later, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(deleted.packs_deleted, marked.packs_marked, "{deleted:?}");
    assert_eq!(deleted.bytes_pending, 0, "{deleted:?}");
    // Nothing is left to do: every blob stored is needed.
    let again = PruneOptions {
        dry_run: true,
        ..opts
    };
    let left = prune(Arc::clone(&repo), &again, later, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(
        (
            left.packs_marked,
            left.packs_repacked,
            left.unused_bytes_kept
        ),
        (0, 0, 0),
        "{left:?}"
    );
    let report = check(Arc::clone(&repo), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.trees, distinct_trees(&repo, &[&second]).await.len());
    restore_and_compare(&repo, &second, &volume, &dir.path().join("pruned")).await;
}

/// The trees the snapshots reach, found by walking their paths (not by the tree walker
/// check uses).
async fn distinct_trees(repo: &Repository, snapshots: &[&Snapshot]) -> HashSet<Id> {
    let mut trees = HashSet::new();
    for snap in snapshots {
        trees.insert(snap.tree);
        let mut walk = Walk::snapshot(repo, snap).await.unwrap();
        while let Some((_, node)) = walk.next().await.unwrap() {
            trees.extend(node.subtree);
        }
    }
    trees
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_directory_at_two_depths_is_one_tree_checked_once() {
    let (dir, repo) = tiny_sorts_and_a_repository().await;
    // `layer` at depth 2 and, its files hard-linked (the same inodes and times), at depth 4:
    // one tree id; so are the empty `_uploads` directories beside them.
    let volume = dir.path().join("volume");
    for sub in ["a/layer", "a/_uploads", "b/c/d/_uploads"] {
        std::fs::create_dir_all(volume.join(sub)).unwrap();
    }
    for i in 0..3 {
        std::fs::write(
            volume.join(format!("a/layer/link{i}")),
            format!("sha256:{i}"),
        )
        .unwrap();
    }
    // 150 distinct directories before depth 4: more visited ids than the 4 KiB budget holds
    // (128), so the set the copy at depth 4 is found in is on disk.
    for i in 0..150 {
        let one = volume.join(format!("a/many/{i:03}"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::write(one.join("link"), format!("sha256:{i}")).unwrap();
    }
    let copied = std::process::Command::new("cp")
        .arg("-al")
        .arg(volume.join("a/layer"))
        .arg(volume.join("b/c/d/"))
        .status()
        .unwrap();
    assert!(copied.success());
    outside_the_racy_window();
    let (_, snap, _) = back_up(&repo, &volume).await;

    let report = check(Arc::clone(&repo), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    let trees = distinct_trees(&repo, &[&snap]).await;
    // The root, volume, a, b, c, d, one `layer`, one empty directory, `many` and its 150.
    assert_eq!(trees.len(), 8 + 1 + 150);
    assert_eq!(report.trees, trees.len());
    restore_and_compare(&repo, &snap, &volume, &dir.path().join("out")).await;
}
