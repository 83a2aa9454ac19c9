//! Backup, restore and check on the in-memory store: exactness, incremental reuse, and
//! refusal of damaged data.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use common::{open, pseudo_random, restore_into, small_chunks, PASSWORD};
use filetime::FileTime;
use stowage_backends::faulty::FaultyStore;
use stowage_backends::memory::MemoryStore;
use stowage_backends::source::FsSource;
use stowage_backends::target::FsTarget;
use stowage_backends::{KvStore, MemoryKv, Store};
use stowage_engine::NoProgress;
use stowage_engine::Repository;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{check, Error, Walk};
use stowage_engine::{restore, RestoreOptions};

/// A small volume with every kind of entry a restore must reproduce.
fn make_volume(root: &Path) {
    let v2 = root.join("_data/docker/registry/v2");
    let blob = pseudo_random(700_000, 1);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob));
    let blob_dir = v2.join(format!("blobs/sha256/{}/{digest}", &digest[..2]));
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(blob_dir.join("data"), &blob).unwrap();
    let link_dir = v2.join(format!("repositories/team/app/_layers/sha256/{digest}"));
    std::fs::create_dir_all(&link_dir).unwrap();
    std::fs::write(link_dir.join("link"), format!("sha256:{digest}")).unwrap();
    std::fs::create_dir_all(v2.join("repositories/team/app/_uploads/empty")).unwrap();
    std::fs::write(root.join("_data/notes.txt"), "text ".repeat(50_000)).unwrap();
    std::fs::write(root.join("_data/secret"), b"key material").unwrap();
    std::fs::set_permissions(
        root.join("_data/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("_data/empty-file"), b"").unwrap();
    symlink("notes.txt", root.join("_data/notes-link")).unwrap();
    let stamp = FileTime::from_unix_time(1_767_225_600, 123_456_789);
    filetime::set_file_mtime(root.join("_data/notes.txt"), stamp).unwrap();
    filetime::set_file_mtime(root.join("_data/docker"), stamp).unwrap();
}

fn tree_differences(a: &Path, b: &Path) -> Vec<String> {
    stowage_fixtures::compare::tree_differences(a, b).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    volume: std::path::PathBuf,
    out: std::path::PathBuf,
    store: Arc<MemoryStore>,
    kv: Arc<MemoryKv>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("dtr-registry-r1");
    make_volume(&volume);
    let store = Arc::new(MemoryStore::new());
    Repository::init(store.as_ref(), PASSWORD, &small_chunks())
        .await
        .unwrap();
    Fixture {
        out: dir.path().join("out"),
        volume,
        _dir: dir,
        store,
        kv: Arc::new(MemoryKv::new()),
    }
}

async fn run_backup(
    repo: &Arc<Repository>,
    volume: &Path,
) -> (stowage_engine::Id, stowage_engine::Snapshot) {
    let source = Arc::new(FsSource::new(volume).unwrap());
    backup(
        Arc::clone(repo),
        source,
        BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

/// A backup of `volume` with one blob per pack, so that deleting or damaging a pack takes
/// exactly one blob.
async fn back_up_one_per_pack(
    repo: &Arc<Repository>,
    volume: &Path,
    progress: Arc<dyn stowage_engine::Progress>,
) -> (stowage_engine::Id, stowage_engine::Snapshot) {
    let opts = BackupOptions {
        pack_size: 1,
        ..BackupOptions::default()
    };
    let source = Arc::new(FsSource::new(volume).unwrap());
    backup(Arc::clone(repo), source, opts, progress)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reproduces_the_volume_exactly() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;
    assert_eq!(snap.replica_id.as_deref(), Some("r1"));
    let target = Arc::new(FsTarget::new(&f.out).unwrap());
    let summary = restore(
        repo.clone(),
        &snap,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(
        summary.verified_blobs, 1,
        "the registry blob was checked against its digest"
    );
    let diffs = tree_differences(&f.volume, &f.out.join("dtr-registry-r1"));
    assert!(
        diffs.is_empty(),
        "restore differs from the source:\n{}",
        diffs.join("\n")
    );

    // Restoring over an existing volume is refused unless asked for.
    let target = Arc::new(FsTarget::new(&f.out).unwrap());
    let again = restore(
        repo,
        &snap,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await;
    assert!(matches!(again, Err(Error::Usage(m)) if m.contains("already exists")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_ahead_or_directory_by_directory_makes_the_same_tree() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, ahead) = run_backup(&repo, &f.volume).await;
    for read_ahead in [0, 1, 3] {
        let opts = BackupOptions {
            read_ahead,
            force: true,
            ..BackupOptions::default()
        };
        let source = Arc::new(FsSource::new(&f.volume).unwrap());
        let (_, snap) = backup(Arc::clone(&repo), source, opts, Arc::new(NoProgress))
            .await
            .unwrap();
        assert_eq!(snap.tree, ahead.tree, "read-ahead {read_ahead}");
        assert_eq!(snap.summary.dirs, ahead.summary.dirs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_volume_reads_nothing_and_a_new_cache_changes_nothing() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    // Outside the racy window: nothing was written within it before the backup starts.
    let racy = stowage_engine::RACY_MARGIN.to_std().unwrap();
    tokio::time::sleep(racy + std::time::Duration::from_millis(150)).await;
    let (_, first) = run_backup(&repo, &f.volume).await;
    assert!(first.summary.bytes_read > 700_000);
    let (_, second) = run_backup(&repo, &f.volume).await;
    assert_eq!(second.summary.bytes_read, 0);
    assert_eq!(second.summary.files_read, 0);
    assert_eq!(
        second.summary.new_blobs, 0,
        "unchanged trees are the same blobs"
    );
    assert_eq!(second.tree, first.tree);

    // A lost cache is rebuilt from index/: the parent snapshot still matches every file
    // (its blobs are all indexed), so nothing is read and nothing new is stored.
    let fresh = open(f.store.clone(), PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .unwrap();
    let (_, third) = run_backup(&fresh, &f.volume).await;
    assert_eq!(third.summary.bytes_read, 0);
    assert_eq!(third.summary.new_blobs, 0);
    assert_eq!(third.tree, first.tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_newer_format_are_refused() {
    let f = fixture().await;
    let store: Arc<dyn Store> = f.store.clone();
    let kv: Arc<dyn KvStore> = f.kv.clone();
    let wrong = Repository::open(store.clone(), b"nope", move |_| Ok(kv)).await;
    assert!(
        matches!(wrong, Err(Error::WrongPassword { keys: 1 })),
        "{wrong:?}"
    );

    let config = f.store.get("config").await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&config).unwrap();
    json["version"] = 99.into();
    f.store
        .put("config", serde_json::to_vec(&json).unwrap().into())
        .await
        .unwrap();
    let kv: Arc<dyn KvStore> = f.kv.clone();
    let newer = Repository::open(store, PASSWORD, move |_| Ok(kv)).await;
    assert!(
        matches!(newer, Err(Error::UnsupportedVersion { found: 99, .. })),
        "{newer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_repository_that_lost_its_config_and_changes_nothing() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    run_backup(&repo, &f.volume).await;
    f.store.delete("config").await.unwrap();
    let before = f.store.list("").await.unwrap().len();
    let again = Repository::init(f.store.as_ref(), PASSWORD, &small_chunks()).await;
    match again {
        Err(Error::Usage(m)) => assert!(m.contains("no config") && m.contains("keys/"), "{m}"),
        other => panic!("init over a damaged repository: {other:?}"),
    }
    assert_eq!(f.store.list("").await.unwrap().len(), before);
    assert!(
        f.store.head("config").await.is_err(),
        "no config was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_reading_data_finds_a_pack_cut_short() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    run_backup(&repo, &f.volume).await;
    let clean = check(repo.clone(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(clean.is_ok(), "{:?}", clean.errors);

    let packs = f.store.list("data/").await.unwrap();
    let victim = packs.iter().max_by_key(|m| m.size).unwrap();
    let bytes = f.store.get(&victim.key).await.unwrap();
    let cut = bytes.slice(..bytes.len() - 1000);
    f.store.put(&victim.key, cut).await.unwrap();
    let report = check(repo, false, Arc::new(NoProgress)).await.unwrap();
    let pack = victim.key.rsplit('/').next().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.damaged_packs.len(), 1, "{report:?}");
    let damaged = &report.damaged_packs[0];
    assert_eq!(damaged.pack.to_hex(), pack);
    assert_eq!(damaged.damage, stowage_engine::PackDamage::WrongSize);
    assert!(damaged.reason.contains("cut short"), "{damaged:?}");
    // The files it breaks are named, and what to run.
    assert!(!damaged.affected.is_empty(), "{damaged:?}");
    assert!(
        report
            .repairs
            .iter()
            .any(|r| r.contains("repair index --read-data")),
        "{:?}",
        report.repairs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pack_fails_restore_and_check_names_it() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (snap_id, snap) = back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    let root = repo.load_tree(&snap.tree).await.unwrap();
    let volume = repo
        .load_tree(&root.nodes[0].subtree.unwrap())
        .await
        .unwrap();
    let data = repo
        .load_tree(&volume.find(b"_data").unwrap().subtree.unwrap())
        .await
        .unwrap();
    let notes = data.find(b"notes.txt").unwrap();
    let pack = repo
        .index()
        .lookup(notes.blobs().next().unwrap())
        .unwrap()
        .unwrap()
        .pack;

    let faulty = Arc::new(FaultyStore::new(f.store.clone()));
    let damaged = open(faulty.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    faulty.flip_bits_under(Some(&stowage_engine::format::pack::Pack::key(&pack)));

    let target = Arc::new(FsTarget::new(&f.out).unwrap());
    let result = restore(
        damaged.clone(),
        &snap,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await;
    match result {
        Err(Error::Corrupt { object, .. }) => assert!(object.contains(&pack.to_hex()), "{object}"),
        other => panic!("restore of damaged data must fail as corrupt, got {other:?}"),
    }
    let restored_notes = f.out.join("dtr-registry-r1/_data/notes.txt");
    assert!(
        !restored_notes.exists(),
        "a file with unverified bytes was left at {}",
        restored_notes.display()
    );

    let report = check(damaged, true, Arc::new(NoProgress)).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.damaged_packs.len(), 1);
    assert_eq!(report.damaged_packs[0].pack, pack);
    assert_eq!(
        report.damaged_packs[0].affected,
        vec![format!(
            "{}:/dtr-registry-r1/_data/notes.txt",
            snap_id.short()
        )]
    );

    faulty.flip_bits_under(None);
    let clean = check(
        open(faulty, PASSWORD, f.kv.clone()).await.unwrap(),
        true,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(clean.is_ok(), "{clean:?}");
    assert_eq!(clean.blobs_read, clean.packs_read, "one blob per pack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upload_leaves_no_snapshot_and_the_next_backup_succeeds() {
    let f = fixture().await;
    let faulty = Arc::new(FaultyStore::new(f.store.clone()));
    let repo = open(faulty.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    faulty.fail_nth_put(1);
    let source = Arc::new(FsSource::new(&f.volume).unwrap());
    let failed = backup(
        repo.clone(),
        source,
        BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await;
    assert!(failed.is_err());
    assert!(f.store.list("snapshots/").await.unwrap().is_empty());
    let (_, snap) = run_backup(&repo, &f.volume).await;
    restore_into(&repo, &snap, &f.out).await;
    assert!(tree_differences(&f.volume, &f.out.join("dtr-registry-r1")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_rewrite_in_the_backup_second_is_read_again() {
    // A registry tag's current/link is rewritten in place: same size, same inode. When the
    // rewrite lands in the clock tick the previous backup read the file, mtime (and with
    // --ignore-ctime nothing else) tells them apart; the racy rule must re-read it.
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let link = f.volume.join("_data/current-link");
    std::fs::write(&link, format!("sha256:{}", "a".repeat(64))).unwrap();
    // Stamped in the tick the backup reads it (a moment after the backup starts, whatever
    // the machine's speed), and stamped the same again after the rewrite.
    let soon = std::time::SystemTime::now() + std::time::Duration::from_millis(500);
    let stamp = FileTime::from_system_time(soon);
    filetime::set_file_mtime(&link, stamp).unwrap();
    let opts = BackupOptions {
        ignore_ctime: true,
        ..BackupOptions::default()
    };
    let source = || Arc::new(FsSource::new(&f.volume).unwrap());
    backup(repo.clone(), source(), opts.clone(), Arc::new(NoProgress))
        .await
        .unwrap();
    std::fs::write(&link, format!("sha256:{}", "b".repeat(64))).unwrap();
    filetime::set_file_mtime(&link, stamp).unwrap();
    let (_, snap) = backup(repo.clone(), source(), opts, Arc::new(NoProgress))
        .await
        .unwrap();
    restore_into(&repo, &snap, &f.out).await;
    let restored =
        std::fs::read_to_string(f.out.join("dtr-registry-r1/_data/current-link")).unwrap();
    assert!(
        restored.ends_with(&"b".repeat(64)),
        "stale content restored: {restored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_registry_blob_is_not_read_again_elsewhere() {
    // A copy of the volume at another path has no parent snapshot; its registry blob is
    // found by digest in the cache and not read, every other file is.
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    run_backup(&repo, &f.volume).await;
    let copy = f.out.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.volume)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, snap) = run_backup(&repo, &copy.join("dtr-registry-r1")).await;
    assert!(snap.parent.is_none());
    assert_eq!(
        snap.summary.files_unchanged, 1,
        "only the registry blob is reused"
    );
    assert_eq!(snap.summary.bytes_read, snap.summary.bytes - 700_000);
    // New inodes and ctimes make new trees; no file content is new.
    assert!(snap.summary.new_bytes < 64 << 10, "{:?}", snap.summary);
}

/// Every path under `dir`, depth first with each directory's entries in byte order, as
/// `Walk` promises.
fn depth_first(dir: &Path, rel: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let (path, rel) = (dir.join(&name), rel.join(&name));
        out.push(rel.to_string_lossy().into_owned());
        if path.symlink_metadata().unwrap().is_dir() {
            depth_first(&path, &rel, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_gives_every_entry_depth_first_in_name_order() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;
    let top = Path::new("dtr-registry-r1");
    let mut expected = vec![top.to_string_lossy().into_owned()];
    depth_first(&f.volume, top, &mut expected);

    for ahead in [None, Some(1), Some(64)] {
        let mut walk = Walk::snapshot(&repo, &snap).await.unwrap();
        if let Some(limit) = ahead {
            walk = walk.read_ahead(Arc::clone(&repo), limit);
        }
        let mut walked = Vec::new();
        while let Some((rel, _)) = walk.next().await.unwrap() {
            walked.push(rel.to_string_lossy().into_owned());
        }
        assert_eq!(walked, expected, "read ahead: {ahead:?}");
    }

    // From a path, and without entering the directories skipped.
    let mut walk = Walk::at(&repo, &snap, "dtr-registry-r1/_data/")
        .await
        .unwrap()
        .read_ahead(Arc::clone(&repo), 2);
    let mut walked = Vec::new();
    while let Some((rel, node)) = walk.next().await.unwrap() {
        if node.name.0 == b"docker" {
            walk.skip();
        }
        walked.push(rel.to_string_lossy().into_owned());
    }
    let under_data: Vec<_> = expected
        .iter()
        .filter(|p| p.starts_with("dtr-registry-r1/_data"))
        .filter(|p| !p.starts_with("dtr-registry-r1/_data/docker/"))
        .cloned()
        .collect();
    assert_eq!(walked, under_data);
    assert!(walked.len() >= 6, "{walked:?}");

    let missing = Walk::at(&repo, &snap, "dtr-registry-r1/nothing").await;
    assert!(matches!(missing, Err(Error::Usage(_))));
}

/// Everything about the tree under `root` that a write through it would change: each
/// entry's path, type, mode, owner, mtime and content (or link target).
fn fingerprint(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = path.symlink_metadata().unwrap();
        let content = if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            String::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&path).unwrap().display().to_string()
        } else {
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read(&path).unwrap(),
            ))
        };
        out.push(format!(
            "{} {:o} {}:{} {}.{} {content}",
            path.strip_prefix(root).unwrap().display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_over_symlinked_directories_writes_nothing_outside_the_target() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;
    let top = "dtr-registry-r1";
    let layers = "dtr-registry-r1/_data/docker/registry/v2/repositories/team/app/_layers";
    for (n, planted) in [top, "dtr-registry-r1/_data", layers]
        .into_iter()
        .enumerate()
    {
        // Outside the target: a tree of the same shape (so that a write through the link
        // would land), and a private directory of another user.
        let outside = f.out.with_file_name(format!("outside-{n}"));
        std::fs::create_dir_all(outside.join("_data/docker/registry/v2")).unwrap();
        std::fs::write(outside.join("_data/notes.txt"), b"not the snapshot's").unwrap();
        std::fs::create_dir(outside.join("private")).unwrap();
        std::fs::set_permissions(
            outside.join("private"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        // Another user's, where the test may give it away (as root).
        match std::os::unix::fs::lchown(outside.join("private"), Some(4321), Some(4321)) {
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => panic!("chown: {e}"),
            _ => {}
        }
        let before = fingerprint(&outside);

        let target_dir = f.out.with_file_name(format!("target-{n}"));
        let restore_once = || async {
            restore(
                repo.clone(),
                &snap,
                Arc::new(FsTarget::new(&target_dir).unwrap()),
                RestoreOptions {
                    overwrite: true,
                    ..RestoreOptions::default()
                },
                Arc::new(NoProgress),
            )
            .await
        };
        restore_once().await.unwrap();
        let at = target_dir.join(planted);
        std::fs::remove_dir_all(&at).unwrap();
        symlink(&outside, &at).unwrap();
        restore_once().await.unwrap();

        assert_eq!(fingerprint(&outside), before, "{planted}: written through");
        assert!(
            !at.symlink_metadata().unwrap().file_type().is_symlink(),
            "{planted}: the symlink is replaced by the snapshot's directory"
        );
        let diffs = tree_differences(&f.volume, &target_dir.join(top));
        assert!(diffs.is_empty(), "{planted}:\n{}", diffs.join("\n"));
    }
}

/// Keeps the warnings a job gives.
#[derive(Default)]
struct Warnings(std::sync::Mutex<Vec<String>>);

impl stowage_engine::Progress for Warnings {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn warn(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_blobs_that_do_not_match_their_digest_are_named_tiny_or_large() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let blobs = f.volume.join("_data/docker/registry/v2/blobs/sha256");
    // Named for content they do not hold: one kept inline in its tree, one in chunks.
    let tiny_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{}"));
    let large_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"large"));
    for (digest, content) in [
        (&tiny_digest, b"{ }".to_vec()),
        (&large_digest, pseudo_random(100_000, 9)),
    ] {
        let dir = blobs.join(&digest[..2]).join(digest);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), content).unwrap();
    }
    let warnings = Arc::new(Warnings::default());
    let source = Arc::new(FsSource::new(&f.volume).unwrap());
    let (_, snap) = backup(
        repo.clone(),
        source,
        BackupOptions::default(),
        warnings.clone(),
    )
    .await
    .unwrap();
    {
        let warnings = warnings.0.lock().unwrap();
        for digest in [&tiny_digest, &large_digest] {
            assert!(
                warnings.iter().any(|w| w.contains(digest.as_str())
                    && w.contains("does not match its digest")),
                "{digest}: {warnings:?}"
            );
        }
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }
    // The snapshot names them; check says so; a restore brings them back as they were.
    assert_eq!(snap.summary.digest_mismatches, 2);
    for digest in [&tiny_digest, &large_digest] {
        let path = format!(
            "_data/docker/registry/v2/blobs/sha256/{}/{digest}/data",
            &digest[..2]
        );
        assert!(
            snap.summary.mismatched.contains(&path),
            "{:?}",
            snap.summary.mismatched
        );
    }
    let report = check(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("did not match their digest")),
        "{:?}",
        report.notes
    );
    let warned = Arc::new(Warnings::default());
    let target = Arc::new(FsTarget::new(&f.out).unwrap());
    restore(
        repo,
        &snap,
        target,
        RestoreOptions::default(),
        warned.clone(),
    )
    .await
    .unwrap();
    assert_eq!(warned.0.lock().unwrap().len(), 2);
    let diffs = tree_differences(&f.volume, &f.out.join("dtr-registry-r1"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_backup_heals_deleted_data_and_tree_packs() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, first) = back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    let root = repo.load_tree(&first.tree).await.unwrap();
    let volume = repo
        .load_tree(&root.nodes[0].subtree.unwrap())
        .await
        .unwrap();
    let data_tree = volume.find(b"_data").unwrap().subtree.unwrap();
    let data = repo.load_tree(&data_tree).await.unwrap();
    let notes = data.find(b"notes.txt").unwrap();
    let pack_of = |id: &stowage_engine::Id| repo.index().lookup(id).unwrap().unwrap().pack;
    for pack in [pack_of(notes.blobs().next().unwrap()), pack_of(&data_tree)] {
        let hex = pack.to_hex();
        f.store
            .delete(&format!("data/{}/{hex}", &hex[..2]))
            .await
            .unwrap();
    }

    // Same volume, same cache: without healing, the backup would rely on both packs.
    let warnings = Arc::new(Warnings::default());
    let (_, second) = back_up_one_per_pack(&repo, &f.volume, warnings.clone()).await;
    let said = warnings.0.lock().unwrap().join("\n");
    assert!(
        said.contains("2 pack(s) the index names are missing"),
        "{said}"
    );
    assert!(second.summary.new_blobs >= 2, "{:?}", second.summary);
    // Blobs are named by their content: stored again, they make the first snapshot whole
    // too. check says so, and both restore exactly.
    let report = check(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("its blobs have other copies")),
        "{:?}",
        report.notes
    );
    for (n, snap) in [&first, &second].into_iter().enumerate() {
        let out = f.out.join(format!("night{n}"));
        std::fs::create_dir_all(&out).unwrap();
        restore_into(&repo, snap, &out).await;
        let diffs = tree_differences(&f.volume, &out.join("dtr-registry-r1"));
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

/// The path of the volume's 700 KB registry blob, from the snapshot's top.
fn registry_blob_path(volume: &Path) -> String {
    let blobs = volume.join("_data/docker/registry/v2/blobs/sha256");
    let shard = std::fs::read_dir(&blobs).unwrap().next().unwrap().unwrap();
    let dir = std::fs::read_dir(shard.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let rel = dir.path().join("data");
    let rel = rel.strip_prefix(volume.parent().unwrap()).unwrap();
    rel.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_index_rebuilds_deleted_index_files_and_drops_a_deleted_pack() {
    use stowage_engine::{repair_index, PackDamage};
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (first_id, first) = back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;

    // Every index file gone: a cold cache knows no blob, and check says what to run.
    for file in f.store.list("index/").await.unwrap() {
        f.store.delete(&file.key).await.unwrap();
    }
    let cold = || open(f.store.clone(), PASSWORD, Arc::new(MemoryKv::new()));
    let report = check(cold().await.unwrap(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(!report.errors.is_empty());
    assert!(
        report.repairs[0].contains("`stowage repair index`"),
        "{:?}",
        report.repairs
    );
    let repo = cold().await.unwrap();
    let packs = stowage_engine::format::pack::Pack::list_stored(f.store.as_ref())
        .await
        .unwrap()
        .len();
    let repaired = repair_index(repo.clone(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(repaired.indexed_packs, packs, "{repaired:?}");
    assert!(repaired.unreadable.is_empty() && repaired.missing.is_empty());
    assert!(repaired.index_files_written >= 1);
    let report = check(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    // The nightly backup reads its parent again and needs nothing new.
    let (_, second) = back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    assert_eq!(second.parent, Some(first_id));
    assert_eq!(second.summary.new_blobs, 0, "{:?}", second.summary);

    // One pack of the registry blob deleted: check names it and the file in both snapshots
    // without reading data; repair index drops it from the index.
    let blob_path = registry_blob_path(&f.volume);
    let node = stowage_engine::find(&repo, &first, &blob_path)
        .await
        .unwrap();
    let pack = repo
        .index()
        .lookup(node.blobs().next().unwrap())
        .unwrap()
        .unwrap()
        .pack;
    f.store
        .delete(&stowage_engine::format::pack::Pack::key(&pack))
        .await
        .unwrap();
    let report = check(cold().await.unwrap(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.damaged_packs.len(), 1, "{report:?}");
    let damaged = &report.damaged_packs[0];
    assert_eq!((damaged.pack, damaged.damage), (pack, PackDamage::Missing));
    assert_eq!(damaged.affected.len(), 2, "{:?}", damaged.affected);
    assert!(damaged.affected.iter().all(|a| a.ends_with(&blob_path)));
    assert!(report
        .repairs
        .iter()
        .any(|r| r.contains("repair snapshots")));
    let repaired = repair_index(cold().await.unwrap(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(repaired.missing, vec![pack]);
    assert_eq!(
        repaired.indexed_packs,
        packs - 1 + second.summary.new_packs as usize
    );
    let report = check(cold().await.unwrap(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.damaged_packs.is_empty(), "{report:?}");
    assert!(
        report.errors.len() == 1 && report.errors[0].contains("in no index"),
        "{:?}",
        report.errors
    );

    // The next backup stores the blob again; both snapshots restore exactly.
    let repo = cold().await.unwrap();
    back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    let report = check(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    restore_into(&repo, &first, &f.out).await;
    let diffs = tree_differences(&f.volume, &f.out.join("dtr-registry-r1"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_index_with_read_data_salvages_the_good_blobs_of_a_damaged_pack() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;
    let notes = stowage_engine::find(&repo, &snap, "dtr-registry-r1/_data/notes.txt")
        .await
        .unwrap();
    let loc = repo
        .index()
        .lookup(notes.blobs().next().unwrap())
        .unwrap()
        .unwrap();
    let key = stowage_engine::format::pack::Pack::key(&loc.pack);
    let mut bytes = f.store.get(&key).await.unwrap().to_vec();
    let in_pack = bytes.len();
    bytes[loc.entry.offset as usize + 20] ^= 0x10;
    f.store.put(&key, bytes.into()).await.unwrap();
    let entries = stowage_engine::format::pack::read_header(
        repo.keys(),
        &loc.pack,
        &f.store.get(&key).await.unwrap(),
    )
    .unwrap();
    assert!(
        entries.len() > 1,
        "the pack holds other blobs: {in_pack} bytes"
    );

    let repaired = stowage_engine::repair_index(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(repaired.damaged.len(), 1, "{repaired:?}");
    assert_eq!(repaired.damaged[0].0, loc.pack);
    assert_eq!(
        (repaired.salvaged_blobs, repaired.lost_blobs),
        (entries.len() - 1, 1)
    );
    // Only the damaged blob is lost: check names the one file needing it.
    let report = check(repo.clone(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].contains("notes.txt"),
        "{:?}",
        report.errors
    );

    // The next backup stores it again; the snapshot restores exactly. The damaged pack is
    // in no index, still named by a reading check until a prune removes it.
    let (_, again) = run_backup(&repo, &f.volume).await;
    assert_eq!(again.summary.new_blobs, 1, "{:?}", again.summary);
    let report = check(repo.clone(), true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.damaged_packs.len(), 1, "{report:?}");
    assert!(report.damaged_packs[0].affected.is_empty(), "{report:?}");
    restore_into(&repo, &snap, &f.out).await;
    let diffs = tree_differences(&f.volume, &f.out.join("dtr-registry-r1"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_snapshots_rewrites_snapshots_without_the_lost_files() {
    use stowage_engine::{repair_snapshots, RepairSnapshotsOptions, REPAIRED_TAG};
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (first_id, first) = back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    std::fs::write(f.volume.join("_data/night2.txt"), "night two").unwrap();
    back_up_one_per_pack(&repo, &f.volume, Arc::new(NoProgress)).await;
    // The pack of notes.txt and the tree of `_uploads` lost.
    let notes = stowage_engine::find(&repo, &first, "dtr-registry-r1/_data/notes.txt")
        .await
        .unwrap();
    let uploads = "dtr-registry-r1/_data/docker/registry/v2/repositories/team/app/_uploads";
    let uploads_tree = stowage_engine::find(&repo, &first, uploads)
        .await
        .unwrap()
        .subtree
        .unwrap();
    for blob in [notes.blobs().next().unwrap(), &uploads_tree] {
        let pack = repo.index().lookup(blob).unwrap().unwrap().pack;
        f.store
            .delete(&stowage_engine::format::pack::Pack::key(&pack))
            .await
            .unwrap();
    }
    let snapshots_before = f.store.list("snapshots/").await.unwrap().len();

    let dry = RepairSnapshotsOptions {
        dry_run: true,
        forget: true,
    };
    let found = repair_snapshots(repo.clone(), dry, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(found.repaired.len(), 2, "{found:?}");
    let lost = &found.repaired[0];
    assert_eq!(lost.snapshot, first_id);
    assert!(lost
        .lost
        .contains(&"dtr-registry-r1/_data/notes.txt".to_string()));
    assert!(
        lost.lost.contains(&format!("{uploads}/")),
        "{:?}",
        lost.lost
    );
    assert_eq!(
        f.store.list("snapshots/").await.unwrap().len(),
        snapshots_before
    );

    let opts = RepairSnapshotsOptions {
        dry_run: false,
        forget: true,
    };
    let done = repair_snapshots(repo.clone(), opts, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(done
        .repaired
        .iter()
        .all(|r| r.removed && r.repaired.is_some()));
    let snapshots = repo.snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0].1.repaired_from, Some(first_id));
    assert!(snapshots
        .iter()
        .all(|(_, s)| s.tags.contains(&REPAIRED_TAG.to_string())));
    // Nothing the repaired snapshots need is lost: check is clean but for the index still
    // naming the deleted packs, which no snapshot needs now.
    let report = check(repo.clone(), false, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    // The repaired second night is the volume without notes.txt, `_uploads` empty.
    restore_into(&repo, &snapshots[1].1, &f.out).await;
    let diffs = tree_differences(&f.volume, &f.out.join("dtr-registry-r1"));
    let expected = ["notes.txt", "_uploads/empty"];
    assert_eq!(diffs.len(), expected.len(), "{}", diffs.join("\n"));
    for name in expected {
        assert!(diffs.iter().any(|d| d.contains(name)), "{name}: {diffs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_restore_leaves_blocks_of_zeros_as_holes_and_the_same_bytes() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture().await;
    // Zeros at the start, in the middle (not block-aligned) and at the end.
    let mut image = vec![0u8; 3 << 20];
    image.extend(pseudo_random(10_000, 5));
    image.extend(vec![0u8; 2 << 20]);
    image.extend(b"end");
    image.extend(vec![0u8; 1 << 20]);
    std::fs::write(f.volume.join("_data/disk.img"), &image).unwrap();
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;

    let allocated = |out: &Path| {
        let meta = std::fs::metadata(out.join("dtr-registry-r1/_data/disk.img")).unwrap();
        (meta.len(), meta.blocks() * 512)
    };
    for sparse in [false, true] {
        let out = f.out.join(format!("sparse-{sparse}"));
        let target = Arc::new(FsTarget::new(&out).unwrap());
        let opts = RestoreOptions {
            sparse,
            ..RestoreOptions::default()
        };
        restore(repo.clone(), &snap, target, opts, Arc::new(NoProgress))
            .await
            .unwrap();
        let diffs = tree_differences(&f.volume, &out.join("dtr-registry-r1"));
        assert!(diffs.is_empty(), "sparse {sparse}: {}", diffs.join("\n"));
        let (len, on_disk) = allocated(&out);
        assert_eq!(len, image.len() as u64);
        match sparse {
            false => assert!(on_disk >= len, "{on_disk} bytes allocated of {len}"),
            true => assert!(on_disk < 64 << 10, "{on_disk} bytes allocated of {len}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_delete_makes_the_target_equal_to_the_snapshot_and_a_dry_run_changes_nothing()
{
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let night1 = f.out.with_file_name("night1");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.volume)
        .arg(&night1)
        .status()
        .unwrap();
    assert!(copied.success());
    let (_, first) = run_backup(&repo, &f.volume).await;

    // The target holds night 2 and more: a new tag, a removed file back as a directory, a
    // file where night 1 has a directory, a symlink out, a restore's leftover temp file.
    let target_root = f.out.join("target");
    restore_into(&repo, &first, &target_root).await;
    let restored = target_root.join("dtr-registry-r1");
    let tags = restored.join("_data/docker/registry/v2/repositories/team/app/_manifests/tags");
    std::fs::create_dir_all(tags.join("night2/current")).unwrap();
    std::fs::write(tags.join("night2/current/link"), "sha256:beef").unwrap();
    std::fs::remove_file(restored.join("_data/notes.txt")).unwrap();
    std::fs::create_dir_all(restored.join("_data/notes.txt/inside")).unwrap();
    let uploads = restored.join("_data/docker/registry/v2/repositories/team/app/_uploads");
    std::fs::remove_dir_all(&uploads).unwrap();
    std::fs::write(&uploads, "a file where a directory was").unwrap();
    let outside = f.out.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "not the restore's").unwrap();
    symlink(&outside, restored.join("_data/escape")).unwrap();
    std::fs::write(
        restored.join("_data/.stowage-restore-0123456789abcdef"),
        "x",
    )
    .unwrap();
    let outside_before = fingerprint(&outside);

    let run = |delete: bool, dry_run: bool| {
        let (repo, first, target_root) = (repo.clone(), first.clone(), target_root.clone());
        async move {
            let opts = RestoreOptions {
                overwrite: true,
                delete,
                dry_run,
                ..RestoreOptions::default()
            };
            let target = Arc::new(FsTarget::new(&target_root).unwrap());
            restore(repo, &first, target, opts, Arc::new(NoProgress))
                .await
                .unwrap()
        }
    };
    let before = fingerprint(&target_root);
    let dry = run(true, true).await;
    assert_eq!(
        fingerprint(&target_root),
        before,
        "a dry run changed the target"
    );
    assert_eq!(dry.deleted, 5, "{:?}", dry.deletions);
    assert!(
        dry.deletions.iter().any(|p| p.ends_with("app/_manifests/")),
        "{:?}",
        dry.deletions
    );
    assert_eq!(dry.files, first.summary.files);

    let done = run(true, false).await;
    assert_eq!(done.deleted, 5, "{:?}", done.deletions);
    let diffs = tree_differences(&night1, &restored);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_eq!(
        fingerprint(&outside),
        outside_before,
        "removed through a symlink"
    );
    // Nothing left to remove.
    assert_eq!(run(true, false).await.deleted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_skip_existing_writes_only_what_is_missing_or_differs() {
    let f = fixture().await;
    let repo = open(f.store.clone(), PASSWORD, f.kv.clone()).await.unwrap();
    let (_, snap) = run_backup(&repo, &f.volume).await;
    restore_into(&repo, &snap, &f.out).await;
    // Stopped part way: one file missing, one left different (other size and mtime).
    let restored = f.out.join("dtr-registry-r1");
    std::fs::remove_file(restored.join("_data/notes.txt")).unwrap();
    std::fs::write(restored.join("_data/secret"), b"half").unwrap();
    let target = Arc::new(FsTarget::new(&f.out).unwrap());
    let opts = RestoreOptions {
        overwrite: true,
        skip_existing: true,
        ..RestoreOptions::default()
    };
    let summary = restore(repo, &snap, target, opts, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(summary.files, snap.summary.files);
    assert_eq!(summary.skipped, snap.summary.files - 2, "{summary:?}");
    let diffs = tree_differences(&f.volume, &restored);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
