//! Prune on the in-memory store: two-phase deletion of exactly the unneeded packs, repacking,
//! marks that backups respect, the race with a backup running meanwhile, and resuming from a
//! killed backup's packs.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{open, pseudo_random, restore_into, small_chunks, PASSWORD};
use stowage_backends::faulty::FaultyStore;
use stowage_backends::memory::MemoryStore;
use stowage_backends::source::FsSource;
use stowage_backends::{MemoryKv, Store};
use stowage_engine::NoProgress;
use stowage_engine::Repository;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{check, Error, Id};
use stowage_engine::{prune, PruneOptions, PruneReport};

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    repo: Arc<Repository>,
}

async fn fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new());
    Repository::init(store.as_ref(), PASSWORD, &small_chunks())
        .await
        .unwrap();
    Fixture {
        dir: tempfile::tempdir().unwrap(),
        repo: reopen(&store).await,
        store,
    }
}

/// A fresh handle with its own cache, as another process would open the repository.
async fn reopen(store: &Arc<MemoryStore>) -> Arc<Repository> {
    open(store.clone(), PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap()
}

impl Fixture {
    /// A directory `name` holding `files` incompressible files of 300 KB, all different
    /// (`pseudo_random` ignores the lowest bit of its seed).
    fn volume(&self, name: &str, files: u64, seed: u64) -> PathBuf {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        for n in 0..files {
            std::fs::write(
                root.join(format!("file-{n}")),
                pseudo_random(300_000, seed * 1000 + 2 * n + 1),
            )
            .unwrap();
        }
        root
    }

    async fn packs(&self) -> BTreeSet<String> {
        keys(&self.store, "data/").await
    }

    async fn data_bytes(&self) -> u64 {
        self.store
            .list("data/")
            .await
            .unwrap()
            .iter()
            .map(|m| m.size)
            .sum()
    }

    async fn forget(&self, id: &Id) {
        self.store.delete(&format!("snapshots/{id}")).await.unwrap();
    }

    /// `check --read-data` passes through `repo`, and `snap` restores exactly through a
    /// handle with a fresh cache.
    async fn assert_sound(&self, repo: &Arc<Repository>, snap: &Snapshot, volume: &Path) {
        check_ok(repo).await;
        self.assert_restores(&reopen(&self.store).await, snap, volume)
            .await;
    }

    /// Restores `snap` and compares it with `volume`, byte for byte.
    async fn assert_restores(&self, repo: &Arc<Repository>, snap: &Snapshot, volume: &Path) {
        let out = self
            .dir
            .path()
            .join(format!("restore-{}", Id::random().short()));
        std::fs::create_dir_all(&out).unwrap();
        restore_into(repo, snap, &out).await;
        let restored = out.join(volume.file_name().unwrap());
        assert_eq!(
            stowage_fixtures::compare::tree_differences(volume, &restored).unwrap(),
            Vec::<String>::new()
        );
    }
}

async fn keys(store: &MemoryStore, prefix: &str) -> BTreeSet<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

async fn back_up(repo: &Arc<Repository>, volume: &Path) -> stowage_engine::Result<(Id, Snapshot)> {
    backup(
        Arc::clone(repo),
        Arc::new(FsSource::new(volume).unwrap()),
        BackupOptions {
            // About two chunks a pack: packs are easy to tell apart.
            pack_size: 128 << 10,
            ..BackupOptions::default()
        },
        Arc::new(NoProgress),
    )
    .await
}

/// Prunes as if `minutes` from now.
async fn prune_at(
    repo: &Arc<Repository>,
    minutes: i64,
    opts: PruneOptions,
) -> stowage_engine::Result<PruneReport> {
    prune(
        Arc::clone(repo),
        &opts,
        Utc::now() + Duration::minutes(minutes),
        Arc::new(NoProgress),
    )
    .await
}

/// Marks wait an hour.
fn hour() -> PruneOptions {
    PruneOptions {
        grace: Duration::hours(1),
        ..PruneOptions::default()
    }
}

async fn check_ok(repo: &Arc<Repository>) {
    let report = check(Arc::clone(repo), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn forget_then_prunes_past_the_grace_period_delete_exactly_the_unneeded_packs() {
    let f = fixture().await;
    let (a, b, c) = (
        f.volume("a", 4, 1),
        f.volume("b", 4, 2),
        f.volume("c", 4, 3),
    );
    let (_, snap_a) = back_up(&f.repo, &a).await.unwrap();
    let after_a = f.packs().await;
    let (id_b, _) = back_up(&f.repo, &b).await.unwrap();
    let only_b: BTreeSet<String> = f.packs().await.difference(&after_a).cloned().collect();
    let (_, snap_c) = back_up(&f.repo, &c).await.unwrap();
    let before = f.packs().await;
    assert!(only_b.len() >= 4, "{only_b:?}");

    // Nothing is unneeded yet.
    let report = prune_at(&f.repo, 0, hour()).await.unwrap();
    assert_eq!((report.packs_marked, report.packs_deleted), (0, 0));

    f.forget(&id_b).await;
    let dry = prune_at(
        &f.repo,
        0,
        PruneOptions {
            dry_run: true,
            ..hour()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.packs_marked, only_b.len());
    assert!(
        keys(&f.store, "marks/").await.is_empty(),
        "a dry run writes nothing"
    );

    // Phase one marks b's packs and deletes nothing.
    let first = prune_at(&f.repo, 0, hour()).await.unwrap();
    assert_eq!((first.packs_marked, first.packs_deleted), (only_b.len(), 0));
    assert_eq!(f.packs().await, before);
    // Within the grace period: still nothing deleted.
    let early = prune_at(&f.repo, 0, hour()).await.unwrap();
    assert_eq!(
        (early.packs_deleted, early.packs_pending),
        (0, only_b.len())
    );

    // Past it: exactly b's packs go, and their bytes.
    let bytes_before = f.data_bytes().await;
    let second = prune_at(&f.repo, 90, hour()).await.unwrap();
    assert_eq!(second.packs_deleted, only_b.len());
    let expected: BTreeSet<String> = before.difference(&only_b).cloned().collect();
    assert_eq!(f.packs().await, expected);
    assert_eq!(bytes_before - f.data_bytes().await, second.bytes_deleted);
    // The deleted packs' marks stay as tombstones (at least a day), then go.
    assert_eq!(keys(&f.store, "marks/").await.len(), 1);
    let third = prune_at(&f.repo, 23 * 60, hour()).await.unwrap();
    assert_eq!((third.packs_deleted, third.packs_marked), (0, 0));
    assert_eq!(keys(&f.store, "marks/").await.len(), 1);
    let third = prune_at(&f.repo, 26 * 60, hour()).await.unwrap();
    assert_eq!((third.packs_deleted, third.packs_marked), (0, 0));
    assert!(keys(&f.store, "marks/").await.is_empty());

    for repo in [&f.repo, &reopen(&f.store).await] {
        check_ok(repo).await;
        f.assert_restores(repo, &snap_a, &a).await;
        f.assert_restores(repo, &snap_c, &c).await;
    }
}

#[tokio::test]
async fn partly_used_packs_are_repacked_and_their_old_copies_deleted_later() {
    let f = fixture().await;
    let volume = f.volume("vol", 6, 7);
    let (first, _) = backup(
        Arc::clone(&f.repo),
        Arc::new(FsSource::new(&volume).unwrap()),
        // Everything in one pack.
        BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    for n in 0..3 {
        std::fs::remove_file(volume.join(format!("file-{n}"))).unwrap();
    }
    let (_, snap) = back_up(&f.repo, &volume).await.unwrap();
    f.forget(&first).await;
    let bytes_before = f.data_bytes().await;

    let report = prune_at(&f.repo, 0, hour()).await.unwrap();
    assert!(report.packs_repacked >= 1, "{report:?}");
    assert_eq!(report.packs_deleted, 0);
    // Old and new copies side by side during the grace period; both readers work.
    f.assert_sound(&f.repo, &snap, &volume).await;

    let later = prune_at(&f.repo, 90, hour()).await.unwrap();
    assert!(later.packs_deleted >= report.packs_repacked);
    let freed = bytes_before - f.data_bytes().await;
    assert!(
        freed >= 3 * 300_000,
        "three 300 KB files freed, only {freed} bytes went"
    );
    check_ok(&f.repo).await;
    for repo in [&f.repo, &reopen(&f.store).await] {
        f.assert_restores(repo, &snap, &volume).await;
    }
}

#[tokio::test]
async fn a_backup_stores_anew_what_only_marked_packs_hold() {
    let f = fixture().await;
    let volume = f.volume("vol", 3, 9);
    let (id, _) = back_up(&f.repo, &volume).await.unwrap();
    f.forget(&id).await;
    let marked = prune_at(&f.repo, 0, hour()).await.unwrap();
    assert!(marked.packs_marked > 0);

    // The same data again: the marked packs hold it, but they are on their way out.
    let repo = reopen(&f.store).await;
    let (_, snap) = back_up(&repo, &volume).await.unwrap();
    assert!(snap.summary.new_bytes >= 3 * 300_000, "{:?}", snap.summary);

    let deleted = prune_at(&repo, 90, hour()).await.unwrap();
    assert_eq!(deleted.packs_deleted, marked.packs_marked);
    f.assert_sound(&repo, &snap, &volume).await;
}

#[tokio::test]
async fn a_snapshot_relying_on_a_pack_marked_meanwhile_is_refused_when_deletion_is_near() {
    let f = fixture().await;
    let volume = f.volume("vol", 3, 11);
    let (id, _) = back_up(&f.repo, &volume).await.unwrap();
    // This handle's view of the marks is from before the prune, like a backup that started
    // before it.
    let running = reopen(&f.store).await;
    f.forget(&id).await;
    prune(
        Arc::clone(&f.repo),
        &PruneOptions {
            grace: Duration::minutes(1),
            ..Default::default()
        },
        Utc::now(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let before = keys(&f.store, "snapshots/").await;
    match back_up(&running, &volume).await {
        Err(Error::PruneRace { packs, .. }) => assert!(packs > 0),
        other => panic!("expected a prune race, got {other:?}"),
    }
    assert_eq!(
        keys(&f.store, "snapshots/").await,
        before,
        "no snapshot written"
    );
    // Once the packs are gone (deleted 90 s from now: past the minute's grace, within the
    // tombstone's), a backup with the same stale view no longer relies on them: it finds
    // them missing from the store and stores their blobs anew, and its snapshot is whole.
    let gone = prune(
        Arc::clone(&f.repo),
        &hour(),
        Utc::now() + Duration::seconds(90),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(gone.packs_deleted > 0);
    let (_, healed) = back_up(&running, &volume).await.unwrap();
    assert!(healed.summary.new_blobs > 0, "{:?}", healed.summary);
    prune_at(&f.repo, 60, hour()).await.unwrap();
    f.assert_sound(&f.repo, &healed, &volume).await;

    // A fresh view sees the marks too, and relies on what the healed snapshot stored.
    let (_, snap) = back_up(&reopen(&f.store).await, &volume).await.unwrap();
    prune_at(&f.repo, 60, hour()).await.unwrap();
    f.assert_sound(&f.repo, &snap, &volume).await;
}

#[tokio::test]
async fn a_snapshot_written_within_the_grace_period_keeps_its_marked_packs() {
    let f = fixture().await;
    let volume = f.volume("vol", 3, 13);
    let (id, _) = back_up(&f.repo, &volume).await.unwrap();
    let running = reopen(&f.store).await;
    f.forget(&id).await;
    // The default grace period: a day.
    let report = prune_at(&f.repo, 0, PruneOptions::default()).await.unwrap();
    assert!(report.packs_marked > 0);
    assert_eq!(report.packs_pending, report.packs_marked);

    // A backup that started before the marks relies on the marked packs: allowed, the
    // deletion is far off; the next prune finds them needed again.
    let (_, snap) = back_up(&running, &volume).await.unwrap();
    assert_eq!(snap.summary.new_bytes, 0, "{:?}", snap.summary);
    let later = prune_at(&f.repo, 1800, hour()).await.unwrap();
    assert_eq!(later.packs_deleted, 0);
    assert!(later.packs_unmarked > 0);
    assert!(keys(&f.store, "marks/").await.is_empty());
    f.assert_sound(&f.repo, &snap, &volume).await;
}

#[tokio::test]
async fn prune_refuses_to_run_when_a_snapshot_needs_a_missing_pack() {
    let f = fixture().await;
    let volume = f.volume("vol", 3, 15);
    back_up(&f.repo, &volume).await.unwrap();
    let lost = f.packs().await.into_iter().next().unwrap();
    f.store.delete(&lost).await.unwrap();
    let before = (f.packs().await, keys(&f.store, "index/").await);
    match prune_at(&f.repo, 0, hour()).await {
        Err(Error::Corrupt { detail, .. }) => {
            // Whether the pack held trees or data.
            assert!(
                detail.contains("`stowage check`") && detail.contains("repair"),
                "{detail}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!((f.packs().await, keys(&f.store, "index/").await), before);
    assert!(keys(&f.store, "marks/").await.is_empty());
}

#[tokio::test]
async fn a_rerun_indexes_and_reuses_the_packs_a_failed_backup_stored() {
    let f = fixture().await;
    let volume = f.volume("vol", 4, 17);
    // No index file can be written: the backup fails after storing its packs.
    let kv = Arc::new(MemoryKv::new());
    let faulty = Arc::new(FaultyStore::new(f.store.clone()));
    faulty.fail_puts_under(Some("index/"));
    let repo = open(faulty, PASSWORD, kv.clone()).await.unwrap();
    assert!(back_up(&repo, &volume).await.is_err());
    let packs = f.packs().await.len() as u64;
    assert!(packs >= 4, "{packs} packs");
    assert!(keys(&f.store, "index/").await.is_empty());

    let repo = open(f.store.clone(), PASSWORD, kv).await.unwrap();
    let (_, snap) = back_up(&repo, &volume).await.unwrap();
    assert_eq!(snap.summary.adopted_packs, packs);
    assert_eq!((snap.summary.new_blobs, snap.summary.new_packs), (0, 0));
    f.assert_sound(&repo, &snap, &volume).await;
}

#[tokio::test]
async fn duplicate_packs_count_as_indexed_and_one_copy_is_pruned() {
    let f = fixture().await;
    let volume = f.volume("vol", 3, 19);
    // Two hosts back up the same data at once: neither knows the other's packs, so every
    // blob is stored twice.
    let (a, b) = (reopen(&f.store).await, reopen(&f.store).await);
    let (first, second) = tokio::join!(back_up(&a, &volume), back_up(&b, &volume));
    let (_, snap) = first.unwrap();
    second.unwrap();
    let repo = reopen(&f.store).await;
    let checked = check(Arc::clone(&repo), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(checked.is_ok() && checked.notes.is_empty(), "{checked:?}");

    // Prune keeps one copy of each blob and marks the other packs, then deletes them.
    let bytes_before = f.data_bytes().await;
    let marked = prune_at(&repo, 0, hour()).await.unwrap();
    assert!(marked.packs_marked > 0, "{marked:?}");
    prune_at(&repo, 90, hour()).await.unwrap();
    assert!(
        f.data_bytes().await * 10 < bytes_before * 6,
        "one copy of two is left"
    );
    f.assert_sound(&repo, &snap, &volume).await;
}

#[tokio::test]
async fn a_noted_pack_that_is_not_what_was_noted_is_not_adopted() {
    let f = fixture().await;
    let volume = f.volume("vol", 4, 19);
    let kv = Arc::new(MemoryKv::new());
    let faulty = Arc::new(FaultyStore::new(f.store.clone()));
    faulty.fail_puts_under(Some("index/"));
    let repo = open(faulty, PASSWORD, kv.clone()).await.unwrap();
    assert!(back_up(&repo, &volume).await.is_err());
    let packs = f.packs().await;
    assert!(packs.len() >= 4, "{} packs", packs.len());
    // One stored pack is damaged (a flipped byte): its id is no longer its hash.
    let damaged = packs.iter().next().unwrap();
    let mut bytes = f.store.get(damaged).await.unwrap().to_vec();
    bytes[10] ^= 1;
    f.store.put(damaged, bytes.into()).await.unwrap();

    let repo = open(f.store.clone(), PASSWORD, kv).await.unwrap();
    let (_, snap) = back_up(&repo, &volume).await.unwrap();
    assert_eq!(snap.summary.adopted_packs, packs.len() as u64 - 1);
    assert!(
        snap.summary.new_blobs > 0,
        "the damaged pack's blobs are stored again"
    );
    f.assert_restores(&reopen(&f.store).await, &snap, &volume)
        .await;
    // check still names the damaged pack, which no snapshot needs (prune removes it later).
    let report = check(Arc::clone(&repo), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.damaged_packs.len(), 1, "{report:?}");
    assert!(report.damaged_packs[0].affected.is_empty(), "{report:?}");
}
