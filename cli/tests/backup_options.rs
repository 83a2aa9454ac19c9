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

#[test]
fn a_metrics_file_holds_the_runs_figures_in_the_prometheus_text_format() {
    let s = Stowage::new();
    let volume = s.path("dtr-registry-r1");
    std::fs::create_dir_all(volume.join("_data")).expect("mkdir");
    std::fs::write(volume.join("_data/file"), b"twelve bytes").expect("write");
    let metrics = s.path("stowage.prom");
    let m = metrics.to_str().expect("utf-8");
    s.ok(&["init"]);
    s.ok(&[
        "backup",
        volume.to_str().expect("utf-8"),
        "--metrics-file",
        m,
    ]);
    let text = std::fs::read_to_string(&metrics).expect("metrics written");
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("stowage_{name}{{")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        assert!(line.contains("command=\"backup\""), "{line}");
        line.rsplit(' ')
            .next()
            .expect("value")
            .parse()
            .expect("a number")
    };
    assert_eq!(value("exit_status"), 0.0);
    assert_eq!(value("backup_files"), 1.0);
    assert_eq!(value("backup_bytes"), 12.0);
    assert!(text.contains("# TYPE stowage_backup_files gauge"));
    // A failed run says so.
    s.fails(&[
        "--metrics-file",
        m,
        "restore",
        "nonexistent",
        "--target",
        "/tmp/x",
    ]);
    let text = std::fs::read_to_string(&metrics).expect("metrics written");
    let status = text
        .lines()
        .find(|l| l.starts_with("stowage_exit_status{command=\"restore\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(status.ends_with(" 1"), "{status}");
}
