//! What a backup cannot read (permissions) is left out of a partial snapshot, named in a
//! warning and counted, with exit status 3; `--fail-on-unreadable` makes it an error and
//! saves nothing. As root, every file is readable, so the commands run as `nobody` then.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{is_root, settle, summary_u64, Stowage};
use serde_json::Value;

/// Runs `stowage <args>` as the test's user, or as `nobody` when that is root (a hard link of
/// the binary in the test directory, since root's home is closed to others).
fn run_as_user(s: &Stowage, args: &[&str]) -> Output {
    let mut command = s.command(args);
    if is_root() {
        let binary = s.path("stowage");
        if !binary.exists() {
            std::fs::hard_link(env!("CARGO_BIN_EXE_stowage"), &binary)
                .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_stowage"), &binary).map(drop))
                .expect("the binary beside the test");
        }
        let mut as_nobody = Command::new("setpriv");
        as_nobody
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .args(args)
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("STOWAGE_PASSWORD_FILE");
        command = as_nobody;
    }
    command.output().expect("stowage runs")
}

fn open_to_all(path: &Path) {
    let mode = if path.is_dir() { 0o777 } else { 0o666 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("readdir") {
            open_to_all(&entry.expect("entry").path());
        }
    }
}

#[test]
fn unreadable_files_and_directories_make_a_partial_snapshot_with_exit_status_3() {
    let s = Stowage::new();
    let volume = s.path("dtr-registry-partial");
    let data = volume.join("_data");
    std::fs::create_dir_all(data.join("closed-dir/inner")).expect("dirs");
    std::fs::write(data.join("readable"), "kept").expect("file");
    std::fs::write(data.join("secret"), "not for us").expect("file");
    std::fs::write(data.join("closed-dir/inner/file"), "below").expect("file");
    open_to_all(s.dir.path());
    std::fs::set_permissions(data.join("secret"), std::fs::Permissions::from_mode(0o000))
        .expect("chmod");
    std::fs::set_permissions(
        data.join("closed-dir"),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod");
    let volume_arg = volume.to_str().expect("utf-8");
    let init = run_as_user(&s, &["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    settle();

    let strict = run_as_user(&s, &["backup", volume_arg, "--fail-on-unreadable"]);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let listed = run_as_user(&s, &["snapshots", "--json"]);
    let snapshots: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(
        snapshots.as_array().expect("rows").len(),
        0,
        "nothing saved"
    );

    let partial = run_as_user(&s, &["backup", volume_arg, "--json"]);
    assert_eq!(partial.status.code(), Some(3), "{partial:?}");
    let warnings = String::from_utf8_lossy(&partial.stderr);
    for name in ["_data/secret", "_data/closed-dir"] {
        assert!(
            warnings.contains(name) && warnings.contains("cannot be read"),
            "{name}: {warnings}"
        );
    }
    let summary: Value = serde_json::from_slice(&partial.stdout).expect("json");
    assert_eq!(summary_u64(&summary, "unreadable"), 2);
    let id = summary["id"].as_str().expect("id").to_string();

    // The rest is there: the readable file, and nothing of what could not be read.
    let ls = run_as_user(&s, &["ls", &id]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("_data/readable"), "{ls}");
    assert!(!ls.contains("secret") && !ls.contains("closed-dir"), "{ls}");
    let out = s.path("out");
    std::fs::create_dir(&out).expect("out");
    open_to_all(&out);
    let restore = run_as_user(
        &s,
        &["restore", &id, "--target", out.to_str().expect("utf-8")],
    );
    assert!(restore.status.success(), "{restore:?}");
    let kept = out.join("dtr-registry-partial/_data/readable");
    assert_eq!(std::fs::read(kept).expect("restored"), b"kept");
}

#[test]
fn a_registry_blob_that_does_not_match_its_digest_makes_exit_status_3_and_restores_as_found() {
    let s = Stowage::new();
    let volume = s.path("dtr-registry-r1");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"what the layer was",
    ));
    let blob = volume.join(format!(
        "_data/docker/registry/v2/blobs/sha256/{}/{digest}",
        &digest[..2]
    ));
    std::fs::create_dir_all(&blob).expect("mkdir");
    std::fs::write(blob.join("data"), b"what the disk now holds").expect("write");
    s.ok(&["init"]);
    settle();
    let out = s.run(&["backup", volume.to_str().expect("utf-8"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backed_up: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary_u64(&backed_up, "digest_mismatches"), 1);
    let named = &backed_up["snapshot"]["summary"]["mismatched"][0];
    assert!(
        named
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("{digest}/data"))),
        "{named}"
    );

    // The restore brings back what was there, with a warning; check names it as a note.
    let target = s.path("restore");
    let restored = s.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(String::from_utf8_lossy(&restored.stderr).contains("did not match its digest"));
    common::assert_same_tree(&volume, &target.join("dtr-registry-r1"));
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("did not match their digest"));
}
