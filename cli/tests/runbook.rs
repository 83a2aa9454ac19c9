//! docs/operations.md followed end to end: the nightly script (contrib/stowage-nightly.sh)
//! twice, a rollback to night 1 with `--delete` equal to night 1 (no tag pushed since left),
//! the metadata back byte for byte; the systemd units pass `systemd-analyze verify`.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use stowage_fixtures::compare::tree_differences;
use stowage_fixtures::{generate, VolumeSpec};

use common::{settle, Stowage};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/stowage-nightly.sh")
}

fn rows(s: &Stowage, args: &[&str]) -> Vec<Value> {
    s.json(args).as_array().expect("a JSON array").clone()
}

#[test]
fn the_nightly_script_twice_then_a_rollback_to_night_one() {
    let s = Stowage::new();
    let spec = VolumeSpec::new(41, 2 << 20);
    let night1 = generate(&spec, &s.path("volumes")).expect("night 1");
    let volume = night1.root.clone();
    let reference = s.path("night1");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&volume)
        .arg(&reference)
        .status();
    assert!(copied.expect("cp").success());
    // The metadata tar, as `docker/dtr backup` would print it.
    let meta = s.path("meta");
    std::fs::create_dir_all(meta.join("dtr-backup-v2.9.16/rethink/properties")).expect("mkdir");
    std::fs::write(meta.join("dtr-backup-v2.9.16/rethink/properties/0"), b"{}").expect("write");
    let tar = s.path("meta.tar");
    let made = Command::new("tar")
        .current_dir(&meta)
        .arg("-cf")
        .arg(&tar)
        .arg("dtr-backup-v2.9.16")
        .status();
    assert!(made.expect("tar").success());
    let offsite = s.path("offsite");
    s.ok(&["init"]);

    let nightly = || {
        let out = s
            .command(&[])
            .get_envs()
            .fold(Command::new(script()), |mut c, (k, v)| {
                if let Some(v) = v {
                    c.env(k, v);
                }
                c
            })
            .env("STOWAGE", env!("CARGO_BIN_EXE_stowage"))
            .env("STOWAGE_VOLUME", &volume)
            .env("STOWAGE_METADATA_COMMAND", format!("cat {}", tar.display()))
            .env("STOWAGE_OFFSITE", &offsite)
            // Both "nights" fall on one day here: the daily rules would keep one of them.
            .env("STOWAGE_KEEP", "--keep-last 7")
            .output()
            .expect("run the nightly script");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    settle();
    nightly();
    generate(&spec.clone().at_night(2), &s.path("volumes")).expect("night 2");
    settle();
    nightly();

    let uri = volume.to_str().expect("utf-8");
    let images = rows(&s, &["snapshots", "--json", "--path", uri]);
    assert_eq!(images.len(), 2, "{images:?}");
    let offsite_copy = Stowage::at(offsite.to_str().expect("utf-8"), Vec::new());
    assert_eq!(
        rows(&offsite_copy, &["snapshots", "--json", "--path", uri]).len(),
        2
    );

    // Rollback: night 1 over the live volume, exactly.
    let night1_id = images[0]["id"].as_str().expect("id");
    let parent = volume.parent().expect("parent").to_str().expect("utf-8");
    s.ok(&["restore", night1_id, "--target", parent, "--delete"]);
    let differences = tree_differences(&reference, &volume).expect("compare");
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    // The metadata, byte for byte, from the offsite copy as well.
    let original = std::fs::read(&tar).expect("read");
    for repo in [&s, &offsite_copy] {
        let out = repo
            .command(&["restore-metadata", "latest"])
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(out.stdout == original, "the metadata tar differs");
    }
}

#[test]
fn the_systemd_units_verify() {
    let s = Stowage::new();
    let dir = s.path("units");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let env = dir.join("nightly.env");
    std::fs::write(&env, "STOWAGE_REPO=/srv/backup/dtr\n").expect("write");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    for unit in ["stowage-nightly.service", "stowage-nightly.timer"] {
        let text = std::fs::read_to_string(contrib.join(unit)).expect("read unit");
        // Where this checkout has them, so that verify finds them.
        let text = text
            .replace(
                "/usr/local/bin/stowage-nightly.sh",
                &script().display().to_string(),
            )
            .replace("/etc/stowage/nightly.env", &env.display().to_string());
        std::fs::write(dir.join(unit), text).expect("write unit");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("stowage-nightly.service"))
        .arg(dir.join("stowage-nightly.timer"))
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
