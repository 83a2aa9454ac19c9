//! Damage is survivable: one bad object in a directory repository (a flipped byte, a stray
//! file with an object's name) is named, left out, and every command keeps working on the
//! rest; what cannot be done safely (prune) is refused with what to do.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use stowage_fixtures::compare::tree_differences;
use stowage_fixtures::{generate, VolumeSpec};

use common::{settle, Stowage};

/// A name of the shape the repository gives its objects.
const JUNK_NAME: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(path, bytes).expect("write object");
}

/// The objects under `dir` of the repository (packs are sharded into subdirectories).
fn objects(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut found = common::walk_files(&repo.join(dir));
    found.sort();
    found
}

/// Everything a command printed, stdout and stderr.
fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Two nights of a small registry backed up: the repository, the snapshots' ids (oldest
/// first) and night 2's volume.
fn two_nights(s: &Stowage) -> (PathBuf, Vec<String>, PathBuf) {
    let spec = VolumeSpec::new(23, 3 << 20);
    let night1 = generate(&spec, &s.path("volumes")).expect("night 1");
    s.ok(&["init"]);
    settle();
    let volume = night1.root.to_str().expect("utf-8").to_string();
    s.ok(&["backup", &volume]);
    generate(&spec.clone().at_night(2), &s.path("volumes")).expect("night 2");
    settle();
    s.ok(&["backup", &volume]);
    let listed = s.json(&["snapshots", "--json"]);
    let ids = rows(&listed)
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    (PathBuf::from(&s.repo), ids, night1.root)
}

fn rows(listed: &Value) -> &Vec<Value> {
    listed.as_array().expect("a JSON array")
}

#[test]
fn a_damaged_or_stray_snapshot_is_named_and_the_others_still_work() {
    let s = Stowage::new();
    let (repo, ids, volume) = two_nights(&s);
    let (night1, night2) = (&ids[0], &ids[1]);
    flip_a_byte(&repo.join("snapshots").join(night1));
    std::fs::write(repo.join("snapshots").join(JUNK_NAME), b"not a snapshot").expect("junk");
    std::fs::write(repo.join("keys").join(JUNK_NAME), b"not a key").expect("junk key");

    // Listed, the damaged ones marked as such.
    let listed = s.json(&["snapshots", "--json"]);
    let damaged: Vec<&str> = rows(&listed)
        .iter()
        .filter(|r| r["damaged"].is_string())
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(damaged, [JUNK_NAME, night1.as_str()], "{listed}");
    assert_eq!(rows(&listed).len(), 3, "{listed}");

    // The good snapshot restores exactly; the damaged one is refused by name.
    let target = s.path("restore");
    s.ok(&[
        "restore",
        &night2[..8],
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let name = volume.file_name().expect("name");
    let differences = tree_differences(&volume, &target.join(name)).expect("compare");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let refused = s.fails(&["restore", &night1[..8], "--target", "/nonexistent"]);
    assert!(
        refused.contains("damaged") && refused.contains("forget"),
        "{refused}"
    );

    // Backups go on (the good snapshot is the parent); check names both.
    let backed_up = s.json(&["backup", volume.to_str().expect("utf-8"), "--json"]);
    assert_eq!(
        backed_up["snapshot"]["summary"]["files_read"].as_u64(),
        Some(0),
        "{backed_up}"
    );
    let out = s.run(&["check"]);
    assert!(!out.status.success());
    let report = said(&out);
    assert!(report.contains(&night1[..8]), "{report}");
    assert!(report.contains(&JUNK_NAME[..8]), "{report}");

    // Copies take the good ones.
    let offsite = s.path("offsite");
    s.ok(&["copy", "--to", offsite.to_str().expect("utf-8")]);
    let copied = Stowage::at(offsite.to_str().expect("utf-8"), Vec::new());
    assert_eq!(rows(&copied.json(&["snapshots", "--json"])).len(), 2);

    // Prune refuses while it cannot know what they need; forget removes them.
    let refused = s.fails(&["prune"]);
    assert!(
        refused.contains("damaged") && refused.contains("forget"),
        "{refused}"
    );
    s.ok(&["forget", &night1[..8], &JUNK_NAME[..8]]);
    s.ok(&["check"]);
    s.ok(&["prune"]);
    s.ok(&["check", "--read-data"]);
    assert_eq!(rows(&s.json(&["snapshots", "--json"])).len(), 2);
}

#[test]
fn a_damaged_index_file_is_named_with_a_cold_or_a_warm_cache() {
    let s = Stowage::new();
    let (repo, ids, _) = two_nights(&s);
    let index_files = objects(&repo, "index");
    assert!(index_files.len() >= 2, "{index_files:?}");
    let damaged = &index_files[0];
    flip_a_byte(damaged);
    let damaged_id = damaged
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();

    // The warm cache has its entries: check still reads the object and names it.
    let out = s.run(&["check"]);
    assert!(!out.status.success());
    let report = said(&out);
    assert!(report.contains(&damaged_id), "{report}");

    // A cold cache is built from the rest; commands that only list still work.
    let cold = s.path("cold-cache");
    let run_cold = |args: &[&str]| {
        s.command(args)
            .env("STOWAGE_CACHE_DIR", &cold)
            .output()
            .expect("run stowage")
    };
    let listed = run_cold(&["snapshots", "--json"]);
    assert!(listed.status.success());
    let warned = String::from_utf8_lossy(&listed.stderr);
    assert!(warned.contains(&damaged_id[..16]), "{warned}");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(rows(&listed).len(), ids.len());
    let checked = run_cold(&["check"]);
    assert!(!checked.status.success());
    assert!(said(&checked).contains(&damaged_id), "{}", said(&checked));

    // Prune would take the packs only that file names for unused: refused, nothing changed.
    let before = objects(&repo, "data").len();
    let pruned = run_cold(&["prune"]);
    assert!(!pruned.status.success());
    let refused = String::from_utf8_lossy(&pruned.stderr);
    assert!(refused.contains(&damaged_id), "{refused}");
    assert_eq!(objects(&repo, "data").len(), before);
}

#[test]
fn a_cache_that_cannot_be_opened_is_moved_aside_and_rebuilt_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stowage::new();
    let (_, ids, _) = two_nights(&s);
    let caches: Vec<PathBuf> = std::fs::read_dir(s.path("cache"))
        .expect("cache root")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let cache = &caches[0];
    let mode = |p: &Path| std::fs::metadata(p).expect("mode").permissions().mode() & 0o777;
    assert_eq!(mode(cache), 0o700, "the cache holds digests and blob ids");

    // Damage it: RocksDB's CURRENT names a manifest that is not there.
    std::fs::write(cache.join("CURRENT"), "MANIFEST-999999\n").expect("damage the cache");
    let out = s.run(&["snapshots", "--json"]);
    assert!(out.status.success(), "{}", said(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows(&listed).len(), ids.len());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("cannot be opened") && note.contains("moved it to"),
        "{note}"
    );
    assert!(!note.contains("in use"), "{note}");
    let mut names: Vec<String> = std::fs::read_dir(s.path("cache"))
        .expect("cache root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[1].contains(".broken-"), "{names:?}");
    assert_eq!(mode(cache), 0o700);
    // The rebuilt cache serves the next commands without a note.
    let again = s.run(&["check"]);
    assert!(again.status.success(), "{}", said(&again));
    assert!(
        !said(&again).contains("cannot be opened"),
        "{}",
        said(&again)
    );
}

#[test]
fn a_deleted_pack_is_named_with_its_files_and_repaired_by_index_backup_and_snapshots() {
    let s = Stowage::new();
    let (repo, ids, volume) = two_nights(&s);
    let mut packs: Vec<(u64, PathBuf)> = objects(&repo, "data")
        .into_iter()
        .map(|p| (std::fs::metadata(&p).expect("stat").len(), p))
        .collect();
    packs.sort();
    let (_, largest) = packs.pop().expect("a pack");
    std::fs::remove_file(&largest).expect("delete pack");
    let pack = largest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();

    // Named without reading data, with the files it breaks and the repairs to run.
    let out = s.run(&["check"]);
    assert!(!out.status.success());
    let report = said(&out);
    assert!(
        report.contains(&format!("pack {pack} is missing")),
        "{report}"
    );
    assert!(report.contains("affects"), "{report}");
    assert!(
        report.contains("to repair:") && report.contains("repair snapshots"),
        "{report}"
    );
    let refused = s.fails(&["prune"]);
    assert!(refused.contains("repair snapshots"), "{refused}");

    let repaired = s.ok(&["repair", "index"]);
    assert!(
        repaired.contains(&format!("pack {pack} is missing")),
        "{repaired}"
    );
    let dry = s.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(
        dry.contains("would be repaired") && dry.contains("lost"),
        "{dry}"
    );
    assert_eq!(rows(&s.json(&["snapshots", "--json"])).len(), ids.len());

    // The next backup stores again what the volume still holds; what only night 1 had is
    // rewritten out of its snapshot, the damaged originals removed.
    s.ok(&["backup", volume.to_str().expect("utf-8")]);
    s.ok(&["repair", "snapshots", "--forget"]);
    s.ok(&["check"]);
    s.ok(&["prune"]);
    s.ok(&["check", "--read-data"]);
    let target = s.path("restore");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let name = volume.file_name().expect("name");
    let differences = tree_differences(&volume, &target.join(name)).expect("compare");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
