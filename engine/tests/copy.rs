//! Copy between repositories on the in-memory store: exact replication, nothing copied
//! twice, an interrupted copy finished by running it again, and refusal of a destination
//! with other keys.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{open, pseudo_random, restore_into, small_chunks, PASSWORD};
use stowage_backends::faulty::FaultyStore;
use stowage_backends::memory::MemoryStore;
use stowage_backends::source::FsSource;
use stowage_backends::{MemoryKv, Store};
use stowage_engine::check;
use stowage_engine::NoProgress;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{copy, copy_with, CopyOptions};
use stowage_engine::{Error, Id};
use stowage_engine::{InitOptions, Repository};

const OFFSITE_PASSWORD: &[u8] = b"battery staple";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A source repository (small chunks, so there are many blobs) with two snapshots of a
/// volume that changed in between.
struct Source {
    dir: tempfile::TempDir,
    repo: Arc<Repository>,
    snapshots: Vec<(Id, Snapshot)>,
}

async fn source() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("dtr-registry-r1");
    let data = volume.join("_data");
    write(&data.join("a.bin"), &pseudo_random(3_000_000, 1));
    write(&data.join("b.bin"), &pseudo_random(1_000_000, 2));
    write(&data.join("dir/c.bin"), &pseudo_random(600_000, 3));
    write(&data.join("dir/link"), b"sha256:0123");
    write(&data.join("notes.txt"), "text ".repeat(60_000).as_bytes());
    let store = Arc::new(MemoryStore::new());
    let opts = small_chunks();
    Repository::init(store.as_ref(), PASSWORD, &opts)
        .await
        .unwrap();
    let repo = open(store, PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    let run = || async {
        let source = Arc::new(FsSource::new(&volume).unwrap());
        backup(
            Arc::clone(&repo),
            source,
            BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    };
    run().await;
    write(&data.join("b.bin"), &pseudo_random(1_000_000, 4));
    write(&data.join("dir/d.bin"), &pseudo_random(500_000, 5));
    run().await;
    let snapshots = repo.snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 2);
    Source {
        dir,
        repo,
        snapshots,
    }
}

/// A new destination sharing `src`'s keys, on `store`.
async fn offsite(store: Arc<dyn Store>, src: &Repository) -> Arc<Repository> {
    Repository::init_from(store.as_ref(), OFFSITE_PASSWORD, "offsite", src)
        .await
        .unwrap();
    open(store, OFFSITE_PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap()
}

fn all_blobs(repo: &Repository) -> Vec<Id> {
    let mut ids = Vec::new();
    repo.index().for_each(&mut |id, _| ids.push(id)).unwrap();
    ids
}

/// Every blob of `src` reads back from `dst` with the same bytes.
async fn assert_same_blobs(src: &Repository, dst: &Repository) {
    for id in all_blobs(src) {
        assert_eq!(
            dst.read_blob(&id).await.unwrap(),
            src.read_blob(&id).await.unwrap(),
            "blob {id}"
        );
    }
}

/// Each copied snapshot names its original and restores to the same bytes and metadata.
async fn assert_restores_alike(src: &Source, dst: &Arc<Repository>) {
    let copies = dst.snapshots().await.unwrap();
    assert_eq!(copies.len(), src.snapshots.len());
    for (n, ((id, snap), (_, copied))) in src.snapshots.iter().zip(&copies).enumerate() {
        assert_eq!(
            copied.original,
            Some(*id),
            "copies keep their order and origin"
        );
        assert_eq!(copied.tree, snap.tree);
        assert_eq!(copied.time, snap.time);
        let mut out = Vec::new();
        for (side, repo) in [("src", &src.repo), ("dst", dst)] {
            let dir = src.dir.path().join(format!("restore-{n}-{side}"));
            restore_into(repo, snap, &dir).await;
            out.push(dir.join("dtr-registry-r1"));
        }
        let diffs = stowage_fixtures::compare::tree_differences(&out[0], &out[1]).unwrap();
        assert!(diffs.is_empty(), "snapshot {n}:\n{}", diffs.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_replicates_exactly_and_a_second_copy_does_nothing() {
    let src = source().await;
    let dst = offsite(Arc::new(MemoryStore::new()), &src.repo).await;
    assert_ne!(dst.config().id, src.repo.config().id, "its own cache");
    assert_eq!(dst.config().chunker, src.repo.config().chunker);
    assert!(dst.keys().same_material(src.repo.keys()));

    let summary = copy(
        Arc::clone(&src.repo),
        Arc::clone(&dst),
        src.snapshots.clone(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let total = all_blobs(&src.repo).len() as u64;
    assert!(total > 60, "{total} blobs");
    assert_eq!(summary.snapshots_copied, 2);
    assert_eq!(summary.snapshots_skipped, 0);
    assert_eq!(summary.blobs_copied, total);
    assert!(summary.packs >= 1 && summary.stored_bytes > summary.packs);
    assert_restores_alike(&src, &dst).await;
    assert_same_blobs(&src.repo, &dst).await;
    let report = check(Arc::clone(&dst), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok() && report.notes.is_empty(), "{report:?}");

    let again = copy(
        Arc::clone(&src.repo),
        Arc::clone(&dst),
        src.snapshots.clone(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!((again.snapshots_copied, again.snapshots_skipped), (0, 2));
    assert_eq!((again.blobs_copied, again.packs), (0, 0));
    assert_eq!(dst.snapshots().await.unwrap().len(), 2);

    // A copy of the copy still names the first snapshot of the chain, and the source
    // recognises those as its own.
    let third = offsite(Arc::new(MemoryStore::new()), &dst).await;
    let dst_snapshots = dst.snapshots().await.unwrap();
    copy(
        Arc::clone(&dst),
        Arc::clone(&third),
        dst_snapshots,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let originals: Vec<_> = third
        .snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, s)| s.original)
        .collect();
    let ids: Vec<_> = src.snapshots.iter().map(|(id, _)| Some(*id)).collect();
    assert_eq!(originals, ids);
    let back = copy(
        Arc::clone(&third),
        Arc::clone(&src.repo),
        third.snapshots().await.unwrap(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!((back.snapshots_copied, back.blobs_copied), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_completes_when_run_again() {
    let src = source().await;
    let memory = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(memory.clone()));
    let dst = offsite(faulty.clone(), &src.repo).await;
    let total = all_blobs(&src.repo).len() as u64;
    // One blob per pack: an index file is written after the 32nd pack, long before the
    // failing put.
    let opts = CopyOptions {
        pack_size: 1,
        ..CopyOptions::default()
    };
    faulty.fail_nth_put(45);
    let failed = copy_with(
        Arc::clone(&src.repo),
        Arc::clone(&dst),
        src.snapshots.clone(),
        opts.clone(),
        Arc::new(NoProgress),
    )
    .await;
    assert!(
        matches!(&failed, Err(e) if e.to_string().contains("injected")),
        "{failed:?}"
    );
    assert!(memory.list("snapshots/").await.unwrap().is_empty());
    assert!(!memory.list("index/").await.unwrap().is_empty());

    // What the failed run indexed is in the repository, not only in this cache.
    let dst = open(memory.clone(), OFFSITE_PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    let kept = all_blobs(&dst).len() as u64;
    assert!(kept >= 32 && kept < total, "{kept} of {total}");
    let rerun = copy_with(
        Arc::clone(&src.repo),
        Arc::clone(&dst),
        src.snapshots.clone(),
        opts,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(rerun.snapshots_copied, 2);
    assert_eq!(rerun.blobs_copied, total - kept, "only what was missing");

    let report = check(Arc::clone(&dst), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.snapshots, 2);
    assert_same_blobs(&src.repo, &dst).await;
    assert_restores_alike(&src, &dst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_repository_with_other_keys_is_refused() {
    let src = source().await;
    let store = Arc::new(MemoryStore::new());
    Repository::init(store.as_ref(), OFFSITE_PASSWORD, &InitOptions::default())
        .await
        .unwrap();
    let other = open(store.clone(), OFFSITE_PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    assert!(!other.keys().same_material(src.repo.keys()));
    let refused = copy(
        Arc::clone(&src.repo),
        other,
        src.snapshots.clone(),
        Arc::new(NoProgress),
    )
    .await;
    match refused {
        Err(e @ Error::KeysDiffer { .. }) => {
            assert!(e.to_string().contains("blob ids differ"), "{e}")
        }
        other => panic!("expected KeysDiffer, got {other:?}"),
    }
    assert!(store.list("data/").await.unwrap().is_empty());
    assert!(store.list("snapshots/").await.unwrap().is_empty());
}
