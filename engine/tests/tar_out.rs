//! Restore as a tar stream: GNU tar extracts exactly the volume a directory restore writes,
//! and a snapshot that fails verification never gives an archive tar accepts.

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::{open, pseudo_random, small_chunks, PASSWORD};
use filetime::FileTime;
use stowage_backends::faulty::FaultyStore;
use stowage_backends::memory::MemoryStore;
use stowage_backends::source::FsSource;
use stowage_backends::target::FsTarget;
use stowage_backends::MemoryKv;
use stowage_engine::restore_tar;
use stowage_engine::Error;
use stowage_engine::NoProgress;
use stowage_engine::Repository;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{restore, RestoreOptions, RestoreSummary};
use stowage_fixtures::{VolumeSpec, REGISTRY_PATH};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    filetime::set_file_mtime(path, FileTime::from_unix_time(secs, nanos)).unwrap();
}

/// Adds to a volume what plain registry data lacks and a tar must carry: paths too long
/// for ustar, names that are not UTF-8, setuid/setgid/sticky modes, symlinks (one with a
/// long target), an empty directory, owners beyond ustar's fields, nanosecond mtimes.
fn add_edge_cases(root: &Path) {
    let edge = root.join("_data/edge");
    // Split across ustar's prefix and name fields.
    let split = edge.join("s".repeat(90)).join("t".repeat(90));
    // Longer than prefix and name together, with components longer than a name.
    let long = edge.join("l".repeat(120)).join("m".repeat(120));
    // Long directory names that are not UTF-8, and that are but not ASCII.
    let raw = edge.join(OsStr::from_bytes(&[0xff; 110]));
    let accents = edge.join("é".repeat(60));
    for dir in [&split, &long, &raw, &accents] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let long_file = long.join("a-file-whose-whole-path-is-longer-than-ustar-allows");
    std::fs::write(&long_file, pseudo_random(200_000, 2)).unwrap();
    std::fs::write(split.join("split"), b"split across prefix and name").unwrap();
    std::fs::write(raw.join("inside"), b"under a binary name").unwrap();
    std::fs::write(accents.join("inside"), b"under a UTF-8 name").unwrap();
    std::fs::write(edge.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name").unwrap();

    for (name, mode) in [("setgid", 0o2755), ("setuid", 0o4711), ("private", 0o600)] {
        std::fs::write(edge.join(name), name.repeat(100)).unwrap();
        if is_root() && name == "setgid" {
            // Before the chmod: chown clears the set-id bits.
            std::os::unix::fs::chown(edge.join(name), Some(1234), Some(5678)).unwrap();
        }
        set_mode(&edge.join(name), mode);
    }
    std::fs::create_dir(edge.join("sticky")).unwrap();
    set_mode(&edge.join("sticky"), 0o1777);
    std::fs::create_dir(edge.join("empty")).unwrap();
    set_mode(&edge.join("empty"), 0o750);
    symlink("setgid", edge.join("link")).unwrap();
    let long_target = format!("../{}", "x".repeat(150));
    symlink(&long_target, edge.join("long-link")).unwrap();
    if is_root() {
        // Beyond ustar's 7 octal digits: only PAX holds these owners.
        std::fs::write(edge.join("big-ids"), b"owned far away").unwrap();
        std::os::unix::fs::chown(edge.join("big-ids"), Some(3_000_000), Some(4_000_001)).unwrap();
        std::os::unix::fs::lchown(edge.join("link"), Some(42), Some(43)).unwrap();
    }

    set_mtime(&long_file, 1_767_225_600, 123_456_789);
    set_mtime(&edge.join("setgid"), 1_700_000_000, 1);
    set_mtime(&edge.join("private"), 1_600_000_000, 999_999_999);
    std::fs::write(edge.join("before-1970"), b"old").unwrap();
    set_mtime(&edge.join("before-1970"), -2, 500_000_000);
    // Directories last, deepest first: adding entries changed their mtimes.
    set_mtime(&long, 1_650_000_000, 42);
    set_mtime(&edge.join("empty"), 1_650_000_001, 500_000_000);
    set_mtime(&edge.join("sticky"), 1_650_000_002, 7);
    set_mtime(&edge, 1_650_000_003, 123);
}

struct Backup {
    dir: tempfile::TempDir,
    volume: PathBuf,
    store: Arc<MemoryStore>,
    kv: Arc<MemoryKv>,
    repo: Arc<Repository>,
    snapshot: Snapshot,
}

/// Backs up `volume` (under `dir`) into a new in-memory repository, one blob per pack when
/// `pack_size` is 1.
async fn back_up(dir: tempfile::TempDir, volume: PathBuf, pack_size: Option<usize>) -> Backup {
    let store = Arc::new(MemoryStore::new());
    let opts = small_chunks();
    Repository::init(store.as_ref(), PASSWORD, &opts)
        .await
        .unwrap();
    let kv = Arc::new(MemoryKv::new());
    let repo = open(store.clone(), PASSWORD, kv.clone()).await.unwrap();
    let mut opts = BackupOptions::default();
    if let Some(size) = pack_size {
        opts.pack_size = size;
    }
    let source = Arc::new(FsSource::new(&volume).unwrap());
    let (_, snapshot) = backup(repo.clone(), source, opts, Arc::new(NoProgress))
        .await
        .unwrap();
    Backup {
        dir,
        volume,
        store,
        kv,
        repo,
        snapshot,
    }
}

async fn write_tar(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    path: &Path,
) -> stowage_engine::Result<RestoreSummary> {
    let out = Box::new(std::fs::File::create(path).unwrap());
    restore_tar(repo, snapshot, out, Arc::new(NoProgress)).await
}

fn gnu_tar(args: &[&OsStr]) -> Output {
    Command::new("tar").args(args).output().unwrap()
}

fn extract(archive: &Path, into: &Path) -> Output {
    std::fs::create_dir_all(into).unwrap();
    let mut args = vec![
        OsStr::new("-xf"),
        archive.as_os_str(),
        OsStr::new("-C"),
        into.as_os_str(),
    ];
    if is_root() {
        args.push(OsStr::new("--numeric-owner"));
    }
    gnu_tar(&args)
}

fn counts(s: &RestoreSummary) -> [u64; 5] {
    [s.files, s.dirs, s.symlinks, s.bytes, s.verified_blobs]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnu_tar_extracts_the_stream_to_the_volume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = VolumeSpec::new(11, 8 << 20);
    let report = stowage_fixtures::generate(&spec, &dir.path().join("src")).unwrap();
    add_edge_cases(&report.root);
    let top = format!("dtr-registry-{}", spec.replica);
    let b = back_up(dir, report.root, None).await;

    // Streamed into `tar -xf - -C DIR`, as `stowage restore --tar | tar -x` would.
    let extracted = b.dir.path().join("x");
    std::fs::create_dir_all(&extracted).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg("-").arg("-C").arg(&extracted);
    if is_root() {
        tar.arg("--numeric-owner");
    }
    let mut tar = tar
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = Box::new(tar.stdin.take().unwrap());
    let summary = restore_tar(b.repo.clone(), &b.snapshot, stdin, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(summary.verified_blobs > 0, "{summary:?}");
    let tar = tar.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&tar.stderr);
    // GNU tar warns about any time before 1970 (and restores it).
    let unexpected = stderr
        .lines()
        .filter(|l| !l.ends_with("before-1970: implausibly old time stamp 1969-12-31 23:59:59.5"));
    assert!(
        tar.status.success() && unexpected.count() == 0,
        "tar -x: {stderr}"
    );
    let diffs =
        stowage_fixtures::compare::tree_differences(&b.volume, &extracted.join(&top)).unwrap();
    assert!(
        diffs.is_empty(),
        "the extracted tar differs from the volume:\n{}",
        diffs.join("\n")
    );
    // Spelled out: GNU tar took the nanoseconds from the PAX mtime records.
    let long_file = extracted
        .join(&top)
        .join("_data/edge")
        .join("l".repeat(120))
        .join("m".repeat(120))
        .join("a-file-whose-whole-path-is-longer-than-ustar-allows");
    let meta = std::fs::metadata(&long_file).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_767_225_600, 123_456_789)
    );

    // The same counts as a directory restore.
    let target = Arc::new(FsTarget::new(b.dir.path().join("restored")).unwrap());
    let direct = restore(
        b.repo.clone(),
        &b.snapshot,
        target,
        RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(counts(&summary), counts(&direct));

    // The top directory first, each directory before its entries, directories with a `/`.
    let archive = b.dir.path().join("backup-images.tar");
    let again = write_tar(b.repo.clone(), &b.snapshot, &archive)
        .await
        .unwrap();
    assert_eq!(counts(&again), counts(&summary));
    let list = gnu_tar(&[OsStr::new("-tf"), archive.as_os_str()]);
    assert!(list.status.success());
    let names: Vec<&[u8]> = list
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(names[0], format!("{top}/").as_bytes());
    let mut seen = std::collections::HashSet::from([names[0]]);
    for name in &names[1..] {
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let parent = &trimmed[..=trimmed.iter().rposition(|b| *b == b'/').unwrap()];
        assert!(
            seen.contains(parent),
            "{} before its directory",
            String::from_utf8_lossy(name)
        );
        if name.ends_with(b"/") {
            seen.insert(*name);
        }
    }
    assert!(names.contains(&format!("{top}/_data/edge/empty/").as_bytes()));
}

/// `tar -t` fails on it, and it does not end with the end-of-archive blocks.
fn assert_cut_short(archive: &Path) {
    let list = gnu_tar(&[OsStr::new("-tf"), archive.as_os_str()]);
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success(), "tar accepted a failed stream");
    assert!(stderr.contains("Unexpected EOF"), "{stderr}");
    let bytes = std::fs::read(archive).unwrap();
    assert!(bytes.len() < 1024 || bytes[bytes.len() - 1024..].iter().any(|b| *b != 0));
}

/// A small hand-made volume with one registry blob of `len` bytes.
fn blob_volume(len: usize, honest: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("dtr-registry-r1");
    let blob = pseudo_random(len, 3);
    let digest = if honest {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob))
    } else {
        format!("ab{}", "0".repeat(62))
    };
    let rel = PathBuf::from(format!(
        "{REGISTRY_PATH}/blobs/sha256/{}/{digest}/data",
        &digest[..2]
    ));
    std::fs::create_dir_all(volume.join(rel.parent().unwrap())).unwrap();
    std::fs::write(volume.join(&rel), &blob).unwrap();
    std::fs::write(volume.join("_data/before"), b"written before the blob").unwrap();
    (dir, volume, rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blob_ends_the_stream_inside_its_file() {
    let (dir, volume, rel) = blob_volume(600_000, true);
    // One blob per pack: the damage hits one chunk of the registry blob, its last.
    let b = back_up(dir, volume, Some(1)).await;
    let rel_in_volume = rel.to_str().unwrap();
    let node = stowage_engine::find(
        &b.repo,
        &b.snapshot,
        &format!("{}/{rel_in_volume}", b.snapshot.name),
    )
    .await
    .unwrap();
    let blobs: Vec<_> = node.blobs().collect();
    assert!(blobs.len() > 2, "{} chunks", blobs.len());
    let last = blobs[blobs.len() - 1];
    let pack = b.repo.index().lookup(last).unwrap().unwrap().pack;
    let faulty = Arc::new(FaultyStore::new(b.store.clone()));
    let damaged = open(faulty.clone(), PASSWORD, b.kv.clone()).await.unwrap();
    faulty.flip_bits_under(Some(&stowage_engine::format::pack::Pack::key(&pack)));

    let archive = b.dir.path().join("damaged.tar");
    match write_tar(damaged, &b.snapshot, &archive).await {
        Err(Error::Corrupt { object, .. }) => assert!(object.contains(&pack.to_hex()), "{object}"),
        other => panic!("a damaged blob must fail the tar restore, got {other:?}"),
    }
    assert_cut_short(&archive);
    // What went out before the damage extracts; the damaged file never whole.
    let extracted = b.dir.path().join("x");
    assert!(!extract(&archive, &extracted).status.success());
    let top = extracted.join("dtr-registry-r1");
    assert_eq!(
        std::fs::read(top.join("_data/before")).unwrap(),
        b"written before the blob"
    );
    let partial = std::fs::metadata(top.join(&rel)).unwrap().len();
    assert!(partial < 600_000, "{partial} bytes of the damaged file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_blob_not_matching_its_digest_never_completes_the_stream() {
    // Inline (nothing of it goes out) and chunked (all but its last blob goes out).
    for len in [300, 400_000] {
        let (dir, volume, rel) = blob_volume(len, false);
        let b = back_up(dir, volume, None).await;
        let archive = b.dir.path().join("mismatch.tar");
        match write_tar(b.repo.clone(), &b.snapshot, &archive).await {
            Err(Error::DigestMismatch { path, .. }) => {
                assert!(path.ends_with(rel.to_str().unwrap()), "{path}")
            }
            other => panic!("{len} bytes: a digest mismatch must fail, got {other:?}"),
        }
        assert_cut_short(&archive);
        let extracted = b.dir.path().join("x");
        assert!(!extract(&archive, &extracted).status.success());
        let file = extracted.join("dtr-registry-r1").join(&rel);
        let partial = std::fs::metadata(&file).map_or(0, |m| m.len());
        assert!(partial < len as u64, "{len}: {partial} bytes went out");
    }
}

/// Takes `left` bytes, then fails as a closed pipe does.
struct ClosingPipe {
    left: usize,
}

impl std::io::Write for ClosingPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_is_a_clear_error() {
    let (dir, volume, _) = blob_volume(3 << 20, true);
    let b = back_up(dir, volume, None).await;
    let out = Box::new(ClosingPipe { left: 100_000 });
    let result = restore_tar(b.repo.clone(), &b.snapshot, out, Arc::new(NoProgress)).await;
    match result {
        Err(Error::Io { path, cause }) => {
            assert_eq!(path, "tar output");
            assert_eq!(cause.kind(), std::io::ErrorKind::BrokenPipe);
        }
        other => panic!("a closed output must fail the restore, got {other:?}"),
    }
}
