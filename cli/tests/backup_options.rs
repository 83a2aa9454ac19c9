//! Backup options a nightly job relies on: --exclude and --exclude-file, and
//! --skip-if-unchanged.

mod common;

use serde_json::Value;

use common::{settle, summary_u64, walk_files, Stowage};

#[test]
fn excluded_entries_stay_out_and_an_unchanged_volume_writes_no_snapshot() {
    let s = Stowage::new();
    let volume = s.path("dtr-registry-r1");
    let repo_dir = volume.join("_data/docker/registry/v2/repositories/team/app");
    std::fs::create_dir_all(repo_dir.join("_uploads/0f3c/hashstates")).expect("mkdir");
    std::fs::write(repo_dir.join("_uploads/0f3c/data"), b"half an upload").expect("write");
    std::fs::create_dir_all(repo_dir.join("_layers")).expect("mkdir");
    std::fs::write(repo_dir.join("_layers/link"), b"sha256:ab").expect("write");
    std::fs::write(volume.join("_data/scratch.tmp"), b"tmp").expect("write");
    let patterns = s.path("excludes");
    std::fs::write(&patterns, "# nightly job\n*.tmp\n\n").expect("write");
    let v = volume.to_str().expect("utf-8");
    s.ok(&["init"]);
    settle();
    let args = [
        "backup",
        v,
        "--exclude",
        "_uploads/",
        "--exclude-file",
        patterns.to_str().expect("utf-8"),
        "--skip-if-unchanged",
        "--json",
    ];
    let first = s.json(&args);
    assert_eq!(summary_u64(&first, "excluded"), 2, "{first}");
    let target = s.path("restored");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let restored: Vec<String> = walk_files(&target)
        .iter()
        .map(|p| p.to_string_lossy().to_string())
        .collect();
    assert!(
        restored.iter().any(|p| p.ends_with("_layers/link")),
        "{restored:?}"
    );
    assert!(
        !restored
            .iter()
            .any(|p| p.contains("_uploads") || p.ends_with(".tmp")),
        "{restored:?}"
    );

    // Unchanged: no new snapshot, the first one's id, exit 0.
    settle();
    let again = s.json(&args);
    assert_eq!(
        again["snapshot"]["summary"]["skipped"],
        Value::Bool(true),
        "{again}"
    );
    assert_eq!(again["id"], first["id"]);
    let count = || {
        s.json(&["snapshots", "--json"])
            .as_array()
            .expect("array")
            .len()
    };
    assert_eq!(count(), 1);
    // A change inside an excluded directory is no change either; one outside is.
    std::fs::write(repo_dir.join("_uploads/0f3c/data"), b"more of the upload").expect("write");
    settle();
    assert_eq!(
        s.json(&args)["snapshot"]["summary"]["skipped"],
        Value::Bool(true)
    );
    std::fs::write(repo_dir.join("_layers/link"), b"sha256:cd").expect("write");
    settle();
    let changed = s.json(&args);
    assert!(
        changed["snapshot"]["summary"].get("skipped").is_none(),
        "{changed}"
    );
    assert_eq!(count(), 2);
}
