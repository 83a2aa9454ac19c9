//! Tars in and out: DTR metadata tars kept as manifests and written back byte for byte,
//! image tars imported, bad input refused without recording anything.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Stowage;
use stowage_fixtures::dtr::{write_metadata_tar, MetadataSpec};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

fn gnu_tar(dir: &Path, args: &[&str]) {
    let out = Command::new("tar")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DTR-like metadata directory: 0700 directories, 0600 files, an empty file, names long
/// enough for GNU long-name records and PAX path headers, a non-ASCII name.
fn metadata_dir(parent: &Path) -> PathBuf {
    let top = parent.join("dtr-backup-v2.9.16");
    let long_dir = top.join("rethink").join("x".repeat(120));
    for dir in [
        top.join("rethink/properties"),
        top.join("certs"),
        long_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).expect("mkdir");
    }
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            top.join("rethink/properties/0"),
            br#"{"id":"dtr.version","value":"2.9.16"}"#.to_vec(),
        ),
        (top.join("rethink/properties/1"), vec![b'p'; 70_000]),
        (
            top.join("certs/key.pem"),
            b"-----BEGIN PRIVATE KEY-----\n".to_vec(),
        ),
        (top.join("certs/empty"), Vec::new()),
        (long_dir.join("y".repeat(200)), b"long".to_vec()),
        (
            top.join("rethink/properties/r\u{e9}sum\u{e9}"),
            b"utf-8 name".to_vec(),
        ),
    ];
    for (path, bytes) in &files {
        std::fs::write(path, bytes).expect("write");
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
    }
    std::fs::hard_link(top.join("certs/key.pem"), top.join("certs/key-link.pem")).expect("link");
    for dir in [top.join("certs"), top.join("rethink"), top.clone()] {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
    }
    top
}

fn snapshot_count(s: &Stowage) -> usize {
    s.json(&["snapshots", "--json"])
        .as_array()
        .map(Vec::len)
        .expect("a list")
}

#[test]
fn metadata_tars_come_back_byte_identical() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let work = s.path("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    metadata_dir(&work);
    gnu_tar(
        &work,
        &["--format=posix", "-cf", "posix.tar", "dtr-backup-v2.9.16"],
    );
    gnu_tar(
        &work,
        &["--format=gnu", "-cf", "gnu.tar", "dtr-backup-v2.9.16"],
    );
    let mut crate_made = Vec::new();
    write_metadata_tar(&MetadataSpec::new(5, 240), &mut crate_made).expect("tar crate");
    std::fs::write(work.join("crate.tar"), &crate_made).expect("write");
    let mut padded = std::fs::read(work.join("gnu.tar")).expect("read");
    padded.extend_from_slice(&[0u8; 512 * 7]);
    std::fs::write(work.join("padded.tar"), &padded).expect("write");

    for name in ["posix.tar", "gnu.tar", "crate.tar", "padded.tar"] {
        let input = work.join(name);
        let original = std::fs::read(&input).expect("read");
        let saved = s.json(&[
            "backup-metadata",
            input.to_str().expect("utf-8"),
            "--replica-id",
            "0123456789ab",
            "--json",
        ]);
        assert_eq!(saved["snapshot"]["replica_id"], "0123456789ab");
        let id = saved["id"].as_str().expect("id").to_string();
        let out = work.join(format!("restored-{name}"));
        s.ok(&["restore-metadata", &id, "-o", out.to_str().expect("utf-8")]);
        assert_eq!(
            sha256(&std::fs::read(&out).expect("read")),
            sha256(&original),
            "{name}"
        );
    }
    let last = s.json(&["snapshots", "--json"]);
    let crate_snapshot = &last.as_array().expect("list")[2];
    assert_eq!(crate_snapshot["dtr_version"], "2.9.16");
    assert_eq!(
        crate_snapshot["tables"]["properties"], 20,
        "240 rows over 12 tables"
    );

    // Through pipes, as from `gpg -d ... | stowage backup-metadata -` and into `docker/dtr restore`.
    let original = std::fs::read(work.join("posix.tar")).expect("read");
    let mut child = s
        .command(&["backup-metadata", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&original)
        .expect("pipe");
    assert!(child.wait().expect("wait").success());
    let piped = s.run(&["restore-metadata", "latest", "--expect-version", "2.9.16"]);
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(sha256(&piped.stdout), sha256(&original));

    let err = s.fails(&["restore-metadata", "latest", "--expect-version", "3.0.0"]);
    assert!(err.contains("2.9.16") && err.contains("3.0.0"), "{err}");

    // Entries list like `tar -tvf`, and one row prints by path.
    let listing = s.ok(&["ls", "latest"]);
    assert!(listing.lines().any(|l| l.starts_with("-rw-------") && l.ends_with("dtr-backup-v2.9.16/certs/key.pem")), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwx------") && l.ends_with("dtr-backup-v2.9.16/certs")),
        "{listing}"
    );
    let row = s.ok(&["dump", "latest", "dtr-backup-v2.9.16/rethink/properties/0"]);
    assert_eq!(row, r#"{"id":"dtr.version","value":"2.9.16"}"#);
    let linked = s.ok(&["dump", "latest", "dtr-backup-v2.9.16/certs/key-link.pem"]);
    assert_eq!(
        linked, "-----BEGIN PRIVATE KEY-----\n",
        "a hard link dumps its target's content"
    );

    // Offsite copies carry the skeleton too: the tar comes back from the copy.
    let offsite = s.path("offsite");
    s.ok(&["copy", "--to", offsite.to_str().expect("utf-8")]);
    let copy = Stowage::at(offsite.to_str().expect("utf-8"), Vec::new());
    copy.ok(&["check", "--read-data"]);
    let from_copy = copy.run(&["restore-metadata", "latest"]);
    assert!(
        from_copy.status.success(),
        "{}",
        String::from_utf8_lossy(&from_copy.stderr)
    );
    assert_eq!(sha256(&from_copy.stdout), sha256(&original));
}

#[test]
fn a_second_night_of_metadata_adds_a_few_percent() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let spec = MetadataSpec::new(11, 6000);
    let mut tars = Vec::new();
    for night in [1, 2] {
        let mut tar = Vec::new();
        write_metadata_tar(&spec.clone().at_night(night), &mut tar).expect("tar");
        let path = s.path(&format!("night{night}.tar"));
        std::fs::write(&path, &tar).expect("write");
        tars.push((path, tar.len() as u64));
    }
    s.ok(&["backup-metadata", tars[0].0.to_str().expect("utf-8")]);
    let second = s.json(&[
        "backup-metadata",
        tars[1].0.to_str().expect("utf-8"),
        "--json",
    ]);
    let stored = second["snapshot"]["summary"]["stored_bytes"]
        .as_u64()
        .expect("stored_bytes");
    let size = tars[1].1;
    // Tables in another order and every row renumbered, 2% of the rows changed: what night 2
    // adds is the changed rows, the renamed entries' headers (compressed) and the trees.
    let bound = size * 6 / 100;
    assert!(
        stored <= bound,
        "night 2 stored {stored} bytes of a {size}-byte tar (bound 6%: {bound})"
    );
    for (i, (path, _)) in tars.iter().enumerate() {
        let snapshots = s.json(&["snapshots", "--json"]);
        let id = snapshots[i]["id"].as_str().expect("id").to_string();
        let out = s.run(&["restore-metadata", &id]);
        assert_eq!(
            sha256(&out.stdout),
            sha256(&std::fs::read(path).expect("read")),
            "night {}",
            i + 1
        );
    }
}

#[test]
fn bad_tars_are_refused_and_record_nothing() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let mut good = Vec::new();
    write_metadata_tar(&MetadataSpec::new(9, 120), &mut good).expect("tar");
    let mut bad_checksum = good.clone();
    bad_checksum[512 * 3 + 20] ^= 0x01; // inside a later header's name
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not a tar",
            (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect(),
            "not a tar archive",
        ),
        (
            "truncated mid-entry",
            good[..good.len() / 2 + 100].to_vec(),
            "cut short",
        ),
        ("bad header checksum", bad_checksum, "bad header checksum"),
        ("empty", Vec::new(), "empty"),
        (
            "no end-of-archive blocks",
            good[..1024 + 512].to_vec(),
            "cut short",
        ),
    ];
    for (what, bytes, expected) in cases {
        let path = s.path("bad.tar");
        std::fs::write(&path, &bytes).expect("write");
        for command in ["backup-metadata", "import-tar"] {
            let err = s.fails(&[command, path.to_str().expect("utf-8")]);
            assert!(err.contains(expected), "{command} of {what}: {err}");
            assert_eq!(
                snapshot_count(&s),
                0,
                "{command} of {what} recorded a snapshot"
            );
        }
    }
    // A tar that is no DTR backup is refused by backup-metadata (import-tar takes it).
    let work = s.path("other");
    std::fs::create_dir_all(work.join("something")).expect("mkdir");
    std::fs::write(work.join("something/file"), b"x").expect("write");
    gnu_tar(&work, &["-cf", "other.tar", "something"]);
    let other = work.join("other.tar");
    let err = s.fails(&["backup-metadata", other.to_str().expect("utf-8")]);
    assert!(err.contains("dtr-backup-v"), "{err}");
    assert_eq!(snapshot_count(&s), 0);
}

#[test]
fn an_image_tar_imports_and_restores_exactly() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let spec = stowage_fixtures::VolumeSpec::new(31, 6 << 20);
    let root = stowage_fixtures::generate(&spec, &s.path("volumes"))
        .expect("generate")
        .root;
    let parent = root.parent().expect("parent");
    let name = root.file_name().expect("name").to_str().expect("utf-8");
    // As operators take them today, with nanosecond mtimes kept (posix format).
    let images = s.path("backup-images.tar");
    let out = Command::new("tar")
        .current_dir(parent)
        .args([
            "--format=posix",
            "--numeric-owner",
            "-cf",
            images.to_str().expect("utf-8"),
            name,
        ])
        .output()
        .expect("GNU tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let imported = s.json(&["import-tar", images.to_str().expect("utf-8"), "--json"]);
    assert_eq!(imported["snapshot"]["name"], name);
    assert_eq!(imported["snapshot"]["replica_id"], spec.replica.as_str());
    let target = s.path("restored");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let differences =
        stowage_fixtures::compare::tree_differences(&root, &target.join(name)).expect("compare");
    assert!(
        differences.is_empty(),
        "restore differs:\n{}",
        differences.join("\n")
    );

    // The same snapshot as a tar stream, extracted by GNU tar as operators do today.
    let as_tar = s.path("restored.tar");
    s.ok(&[
        "restore",
        "latest",
        "--format",
        "tar",
        "-o",
        as_tar.to_str().expect("utf-8"),
    ]);
    let extracted = s.path("extracted");
    std::fs::create_dir_all(&extracted).expect("mkdir");
    let mut args = vec!["-xf", as_tar.to_str().expect("utf-8")];
    if common::is_root() {
        args.push("--numeric-owner");
    }
    gnu_tar(&extracted, &args);
    let differences =
        stowage_fixtures::compare::tree_differences(&root, &extracted.join(name)).expect("compare");
    assert!(
        differences.is_empty(),
        "tar restore differs:\n{}",
        differences.join("\n")
    );
    let top: Vec<_> = std::fs::read_dir(&extracted).expect("read_dir").collect();
    assert_eq!(top.len(), 1, "one top entry: {name}/");

    // And the very tar that was imported.
    let original = s.path("original-again.tar");
    s.ok(&[
        "restore-metadata",
        "latest",
        "-o",
        original.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        sha256(&std::fs::read(&original).expect("read")),
        sha256(&std::fs::read(&images).expect("read"))
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&original).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "tar outputs are private");
}

#[test]
fn a_path_that_is_both_file_and_directory_is_refused() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in [("top/x", &b"file"[..]), ("top/x/y", &b"inside"[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(body.len() as u64);
        tar.append_data(&mut header, path, body).expect("append");
    }
    let path = s.path("conflict.tar");
    std::fs::write(&path, tar.into_inner().expect("finish")).expect("write");
    let err = s.fails(&["import-tar", path.to_str().expect("utf-8")]);
    assert!(err.contains("both as a file and as a directory"), "{err}");
    assert_eq!(snapshot_count(&s), 0);
}

/// A new repository and a metadata tar made by GNU tar (`meta.tar` in the test directory).
fn repository_and_metadata_tar() -> (Stowage, PathBuf) {
    let s = Stowage::new();
    s.ok(&["init"]);
    let parent = s.path("in");
    let dir = metadata_dir(&parent);
    let name = dir.file_name().expect("name").to_str().expect("utf-8");
    gnu_tar(&parent, &["-cf", "../meta.tar", name]);
    let tar = s.path("meta.tar");
    (s, tar)
}

#[test]
fn a_tar_is_never_written_to_a_terminal() {
    let (s, _) = repository_and_metadata_tar();
    s.ok(&[
        "backup-metadata",
        s.path("meta.tar").to_str().expect("utf-8"),
    ]);
    let binary = env!("CARGO_BIN_EXE_stowage");
    let env: Vec<_> = s
        .command(&[])
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    // `script` runs the command with a terminal as its stdout.
    for command in ["restore latest --format tar", "restore-metadata latest"] {
        let out = Command::new("script")
            .args(["-qec", &format!("{binary} {command}"), "/dev/null"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{command}: {said}");
        assert!(
            said.contains("refusing to write a tar to a terminal"),
            "{command}: {said}"
        );
    }
}

#[test]
fn a_metadata_backup_read_from_a_command_is_kept_only_when_the_command_succeeds() {
    let (s, tar) = repository_and_metadata_tar();
    let original = std::fs::read(&tar).expect("read tar");
    let cat = format!("cat {}", tar.display());

    let out = s.run(&[
        "backup-metadata",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        &cat,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot_count(&s), 1);
    let restored = s
        .command(&["restore-metadata", "latest"])
        .output()
        .expect("run");
    assert!(restored.status.success());
    assert_eq!(sha256(&restored.stdout), sha256(&original));

    // The same bytes from a command that then fails: refused, nothing recorded.
    let failing = format!("{cat}; exit 3");
    let out = s.run(&[
        "backup-metadata",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        &failing,
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("failed") && said.contains("3"), "{said}");
    assert_eq!(snapshot_count(&s), 1);
}
