//! The committed version-1 repository (`tests/golden/v1/`, see its README.md): a repository
//! an earlier build wrote must keep opening, checking and restoring exactly, whatever the
//! code around the format becomes.
//!
//! `the_committed_v1_repository_checks_and_restores_exactly` copies it to a temporary
//! directory (nothing writes into the checkout), opens it with its password, checks it with
//! data reading, restores every snapshot and compares the restored trees with the committed
//! manifests (`expected-<label>.txt`: every entry, nothing more), and rebuilds the tar of the
//! tar snapshot, comparing its sha256 with the committed one. A failure means this build
//! no longer reads version 1 as it was written: the FORMAT changed.
//!
//! `make_golden_v1_repository` (ignored) made the repository, once, with the code of the
//! day:
//!
//! ```text
//! cargo test -p stowage-engine --test golden_repo -- --ignored make_golden_v1_repository
//! ```
//!
//! It is not to be run again for version 1: a later format gets a directory of its own,
//! and version 1 stays as it was.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{open, pseudo_random, restore_into};
use filetime::FileTime;
use sha2::{Digest, Sha256};
use stowage_backends::fs::FsStore;
use stowage_backends::source::FsSource;
use stowage_backends::{MemoryKv, Store};
use stowage_engine::check;
use stowage_engine::format::chunker::ChunkerParams;
use stowage_engine::Id;
use stowage_engine::NoProgress;
use stowage_engine::Snapshot;
use stowage_engine::{backup, BackupOptions};
use stowage_engine::{backup_tar, write_original_tar, TarOptions};
use stowage_engine::{InitOptions, Repository};

/// The password of the committed repository (also in its README.md).
const PASSWORD: &[u8] = b"stowage golden v1";
/// 2023-11-14T22:13:20Z: the entries' mtimes count from here.
const T0: i64 = 1_700_000_000;
const VOLUME: &str = "dtr-registry-gold1";
const IMAGE: &str = "image";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------
// Manifests: what a restore must give, entry by entry
// ---------------------------------------------------------------------------------------

/// One line per entry under `root` (itself as `.`), sorted by path bytes:
/// `<kind> <mode> <mtime>.<ns> <size> <sha256> <path>[ -> <target>]`, paths and targets with
/// bytes outside printable ASCII escaped. Owners are not in it: a test may run as anyone.
fn manifest(root: &Path) -> String {
    let mut entries = BTreeMap::new();
    collect(root, Path::new("."), &mut entries);
    entries.into_values().collect()
}

fn collect(root: &Path, rel: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).expect("lstat");
    let kind = meta.file_type();
    let (kind_name, size, sha, target) = if kind.is_dir() {
        ("dir", "-".to_string(), "-".to_string(), None)
    } else if kind.is_symlink() {
        let target = std::fs::read_link(&path).expect("readlink");
        let target = target.as_os_str().as_bytes().escape_ascii().to_string();
        ("symlink", "-".into(), "-".into(), Some(target))
    } else if kind.is_file() {
        let bytes = std::fs::read(&path).expect("read");
        ("file", bytes.len().to_string(), sha256_hex(&bytes), None)
    } else {
        panic!(
            "{} is neither a file, a directory nor a symlink",
            path.display()
        );
    };
    let rel_bytes = rel.as_os_str().as_bytes();
    let mut line = format!(
        "{kind_name} {:04o} {}.{:09} {size} {sha} {}",
        meta.mode() & 0o7777,
        meta.mtime(),
        meta.mtime_nsec(),
        rel_bytes.escape_ascii()
    );
    if let Some(target) = target {
        line.push_str(&format!(" -> {target}"));
    }
    line.push('\n');
    out.insert(rel_bytes.to_vec(), line);
    if kind.is_dir() {
        for entry in std::fs::read_dir(&path).expect("read_dir") {
            let name = entry.expect("entry").file_name();
            collect(root, &rel.join(name), out);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The check, run on the committed repository
// ---------------------------------------------------------------------------------------

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        match entry.file_type().expect("file type").is_dir() {
            true => copy_tree(&entry.path(), &dest),
            false => {
                std::fs::copy(entry.path(), &dest).expect("copy");
            }
        }
    }
}

/// The committed list of snapshots: label -> id.
fn committed_snapshots(dir: &Path) -> BTreeMap<String, Id> {
    let text = std::fs::read_to_string(dir.join("snapshots.txt")).expect("snapshots.txt");
    text.lines()
        .map(|line| {
            let (id, label) = line.split_once(' ').expect("`<id> <label>`");
            (label.to_string(), id.parse().expect("a snapshot id"))
        })
        .collect()
}

/// Opens the repository at `repo_dir` (a copy), checks it with data reading and restores
/// every snapshot, comparing with the manifests in `expected`.
async fn verify(repo_dir: &Path, expected: &Path) {
    let store: Arc<dyn Store> = Arc::new(FsStore::create(repo_dir).expect("the store"));
    let repo = open(store, PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .expect("the v1 repository opens with its password");
    assert_eq!(repo.config().version, 1);
    assert!(repo.config().gzip);

    let report = check(Arc::clone(&repo), true, Arc::new(NoProgress))
        .await
        .expect("check runs");
    assert!(report.is_ok(), "check found damage: {report:#?}");
    assert!(report.notes.is_empty(), "check notes: {:?}", report.notes);
    assert!(report.blobs_read > 0 && report.packs_read == report.packs);

    let labels = committed_snapshots(expected);
    let snapshots: BTreeMap<Id, Snapshot> = repo
        .snapshots()
        .await
        .expect("snapshots")
        .into_iter()
        .collect();
    let mut want: Vec<Id> = labels.values().copied().collect();
    want.sort();
    assert_eq!(
        snapshots.keys().copied().collect::<Vec<_>>(),
        want,
        "the repository holds exactly the committed snapshots"
    );
    let snapshot = |label: &str| &snapshots[&labels[label]];
    assert_eq!(snapshot("first").parent, None);
    assert_eq!(snapshot("second").parent, Some(labels["first"]));
    assert!(snapshot("first").summary.gzip_layers == 1);
    assert!(snapshot("tar").tar.is_some());

    let out = tempfile::tempdir().expect("tempdir");
    for (label, id) in &labels {
        let snap = &snapshots[id];
        let dir = out.path().join(label);
        restore_into(&repo, snap, &dir).await;
        let got = manifest(&dir.join(&snap.name));
        let want = std::fs::read_to_string(expected.join(format!("expected-{label}.txt")))
            .expect("the expected manifest");
        assert!(
            got == want,
            "restore of snapshot {label} differs from expected-{label}.txt:\n{}",
            line_diff(&want, &got)
        );
    }

    let tar = snapshot("tar").clone();
    let sink = SharedBuf(Arc::default());
    let size = write_original_tar(
        Arc::clone(&repo),
        &tar,
        Box::new(sink.clone()),
        Arc::new(NoProgress),
    )
    .await
    .expect("the tar is rebuilt");
    let written = sink.0.lock().expect("lock").clone();
    let want =
        std::fs::read_to_string(expected.join("expected-tar.sha256")).expect("expected-tar.sha256");
    let got = format!("{}  {IMAGE}.tar {size}\n", sha256_hex(&written));
    assert_eq!(got, want, "the rebuilt tar");
    assert_eq!(size, written.len() as u64);
}

fn line_diff(want: &str, got: &str) -> String {
    let want_lines: Vec<&str> = want.lines().collect();
    let got_lines: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for line in &want_lines {
        if !got_lines.contains(line) {
            out.push_str(&format!("- {line}\n"));
        }
    }
    for line in &got_lines {
        if !want_lines.contains(line) {
            out.push_str(&format!("+ {line}\n"));
        }
    }
    out
}

/// A writer into a shared buffer, so the bytes can be read after the writer was moved into
/// a blocking task.
#[derive(Clone)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_v1_repository_checks_and_restores_exactly() {
    let dir = golden_dir();
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(&dir.join("repo"), copy.path());
    verify(copy.path(), &dir).await;
}

// ---------------------------------------------------------------------------------------
// The generator, run once
// ---------------------------------------------------------------------------------------

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sets the mtime of `path` (not following a symlink): `T0 + secs`, with nanoseconds.
fn stamp(path: &Path, secs: i64, nanos: u32) {
    let t = FileTime::from_unix_time(T0 + secs, nanos);
    filetime::set_symlink_file_times(path, t, t).expect("set mtime");
}

/// Gives every entry under `root` (and `root`) its own mtime, with nanoseconds.
fn stamp_all(root: &Path) {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        if std::fs::symlink_metadata(&path).expect("lstat").is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
        paths.push(path);
    }
    paths.sort();
    for (i, path) in paths.iter().enumerate() {
        let i = i as u64;
        let nanos = (i * 123_456_789 + 1) % 1_000_000_000;
        stamp(path, 10 * i as i64, nanos as u32);
    }
}

/// Text that compresses about 4:1, the same every time.
fn words(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer", "manifest", "digest", "registry", "blob", "tag", "upload", "index", "sha256",
        "config", "image", "replica", "rethink", "volume", "chunk", "pack",
    ];
    let noise = pseudo_random(len, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[usize::from(noise[i % len] & 15)].as_bytes());
        out.push(match noise[(i + 1) % len] % 11 {
            0 => b'\n',
            1 => b',',
            _ => b' ',
        });
        out.extend_from_slice(format!("{}", noise[(i + 2) % len] % 7).as_bytes());
        i += 3;
    }
    out.truncate(len);
    out
}

/// Stores `bytes` as a registry blob under `v2` and links it from `team/app`; returns the
/// digest.
fn registry_blob(v2: &Path, bytes: &[u8], link_dir: &str) -> String {
    let digest = sha256_hex(bytes);
    let dir = v2.join(format!("blobs/sha256/{}/{digest}", &digest[..2]));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("data"), bytes).expect("write");
    let link = v2.join(format!("repositories/team/app/{link_dir}/sha256/{digest}"));
    std::fs::create_dir_all(&link).expect("mkdir");
    std::fs::write(link.join("link"), format!("sha256:{digest}")).expect("write");
    digest
}

/// A small registry volume with every kind of entry.
fn make_volume(root: &Path) {
    let v2 = root.join("docker/registry/v2");
    // Several chunks (the repository's chunks are 8 to 32 KiB, at most 128 KiB).
    registry_blob(&v2, &pseudo_random(200_000, 11), "_layers");
    // A gzip layer of at least 64 KiB: kept as its plaintext and a recipe.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&words(340_000, 12)).expect("gzip");
    let layer = gz.finish().expect("gzip");
    assert!(
        layer.len() >= 64 << 10,
        "the gzip layer has {} bytes",
        layer.len()
    );
    registry_blob(&v2, &layer, "_layers");
    let manifest = format!(
        "{{\"schemaVersion\":2,\"layers\":[{{\"digest\":\"sha256:{}\"}}]}}",
        sha256_hex(&layer)
    );
    let manifest_digest = registry_blob(&v2, manifest.as_bytes(), "_manifests/revisions");
    let tag = v2.join("repositories/team/app/_manifests/tags/latest/current");
    std::fs::create_dir_all(&tag).expect("mkdir");
    std::fs::write(tag.join("link"), format!("sha256:{manifest_digest}")).expect("write");
    let uploads = v2.join("repositories/team/app/_uploads");
    std::fs::create_dir_all(&uploads).expect("mkdir");
    set_mode(&uploads, 0o750);

    std::fs::write(root.join("notes.txt"), words(20_000, 13)).expect("write");
    std::fs::write(root.join("secret"), b"key material").expect("write");
    set_mode(&root.join("secret"), 0o600);
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho golden\n").expect("write");
    set_mode(&root.join("run.sh"), 0o755);
    std::fs::write(root.join("setuid-tool"), b"set-user-id").expect("write");
    set_mode(&root.join("setuid-tool"), 0o4755);
    std::fs::write(root.join("empty-file"), b"").expect("write");
    std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name").expect("write");
    std::fs::create_dir(root.join("sticky")).expect("mkdir");
    set_mode(&root.join("sticky"), 0o1777);
    symlink("docker/registry/v2", root.join("current")).expect("symlink");
    symlink("notes.txt", root.join("notes-link")).expect("symlink");
    stamp_all(root);
}

/// What changed before the second snapshot: a file rewritten, one added, one removed.
fn change_volume(root: &Path) {
    let mut notes = words(20_000, 13);
    notes.extend_from_slice(b"\nappended for the second snapshot\n");
    std::fs::write(root.join("notes.txt"), notes).expect("write");
    std::fs::write(root.join("added.txt"), b"added for the second snapshot\n").expect("write");
    std::fs::remove_file(root.join("secret")).expect("rm");
    stamp(&root.join("notes.txt"), 5000, 500_000_001);
    stamp(&root.join("added.txt"), 5001, 999_999_999);
    stamp(root, 5002, 1);
}

/// A small image directory for the tar snapshot.
fn make_image(root: &Path) {
    let layer = root.join("blobs/sha256");
    std::fs::create_dir_all(&layer).expect("mkdir");
    std::fs::write(layer.join("config.json"), b"{\"architecture\":\"amd64\"}").expect("write");
    std::fs::write(layer.join("layer.tar"), pseudo_random(40_000, 21)).expect("write");
    let long = root.join("a-directory-with-a-rather-long-name-to-need-a-pax-path-record");
    std::fs::create_dir_all(&long).expect("mkdir");
    std::fs::write(
        long.join("and-a-file-with-a-long-name-too-past-one-hundred-bytes"),
        b"long path",
    )
    .expect("write");
    std::fs::write(root.join("index.json"), words(3_000, 22)).expect("write");
    set_mode(&root.join("index.json"), 0o640);
    symlink("index.json", root.join("index-link")).expect("symlink");
    stamp_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "made the committed repository; not to be run again for version 1"]
async fn make_golden_v1_repository() {
    let golden = golden_dir();
    let repo_dir = golden.join("repo");
    if repo_dir.exists() {
        std::fs::remove_dir_all(&repo_dir).expect("remove the old repository");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let volume = work.path().join(VOLUME);
    make_volume(&volume);

    let store: Arc<dyn Store> = Arc::new(FsStore::create(&repo_dir).expect("the store"));
    let opts = InitOptions {
        chunker: ChunkerParams {
            min: 8 << 10,
            avg: 32 << 10,
            max: 128 << 10,
        },
        compression_level: 3,
        host: "golden-host".into(),
        gzip: true,
    };
    Repository::init(store.as_ref(), PASSWORD, &opts)
        .await
        .expect("init");
    let repo = open(Arc::clone(&store), PASSWORD, Arc::new(MemoryKv::new()))
        .await
        .expect("open");
    let backup_opts = BackupOptions {
        host: "golden-host".into(),
        ..BackupOptions::default()
    };
    let run = |repo: Arc<Repository>, opts: BackupOptions| {
        let source = Arc::new(FsSource::new(&volume).expect("source"));
        async move {
            backup(repo, source, opts, Arc::new(NoProgress))
                .await
                .expect("backup")
        }
    };
    let mut labels = Vec::new();
    let (first, snap) = run(Arc::clone(&repo), backup_opts.clone()).await;
    assert_eq!(snap.summary.gzip_layers, 1, "{:?}", snap.summary);
    labels.push((first, "first"));
    std::fs::write(golden.join("expected-first.txt"), manifest(&volume)).expect("write");

    change_volume(&volume);
    let (second, snap) = run(Arc::clone(&repo), backup_opts).await;
    assert_eq!(snap.parent, Some(first));
    labels.push((second, "second"));
    std::fs::write(golden.join("expected-second.txt"), manifest(&volume)).expect("write");

    let image = work.path().join(IMAGE);
    make_image(&image);
    let tar_path = work.path().join(format!("{IMAGE}.tar"));
    let status = Command::new("tar")
        .args(["--format=posix", "--sort=name", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(work.path())
        .arg(IMAGE)
        .status()
        .expect("GNU tar runs");
    assert!(status.success());
    let tar_bytes = std::fs::read(&tar_path).expect("the tar");
    let tar_opts = TarOptions {
        host: "golden-host".into(),
        tags: vec!["image".into()],
        replica_id: None,
        kind: "tar".into(),
        uri: format!("{IMAGE}.tar"),
        fallback_name: IMAGE.into(),
        dtr_metadata: false,
        pack_size: 16 << 20,
    };
    let file = std::fs::File::open(&tar_path).expect("the tar");
    let (tar_id, snap) = backup_tar(
        Arc::clone(&repo),
        Box::new(file),
        tar_opts,
        Arc::new(NoProgress),
    )
    .await
    .expect("tar snapshot");
    assert_eq!(snap.name, IMAGE);
    labels.push((tar_id, "tar"));
    std::fs::write(golden.join("expected-tar.txt"), manifest(&image)).expect("write");
    std::fs::write(
        golden.join("expected-tar.sha256"),
        format!(
            "{}  {IMAGE}.tar {}\n",
            sha256_hex(&tar_bytes),
            tar_bytes.len()
        ),
    )
    .expect("write");
    let listing: String = labels
        .iter()
        .map(|(id, label)| format!("{id} {label}\n"))
        .collect();
    std::fs::write(golden.join("snapshots.txt"), listing).expect("write");
    drop(repo);

    // What the committed test will do.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(&repo_dir, copy.path());
    verify(copy.path(), &golden).await;
}
