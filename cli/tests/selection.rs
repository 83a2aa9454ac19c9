//! Snapshot selection as restic does it (--host, --tag, --path, --replica; `latest` is the
//! latest of the selection), tags changed after the fact, and forget's --keep-within and
//! --prune.

mod common;

use serde_json::Value;

use common::{settle, Stowage};

fn rows(s: &Stowage, args: &[&str]) -> Vec<Value> {
    s.json(args).as_array().expect("a JSON array").clone()
}

#[test]
fn commands_work_on_the_selected_snapshots_and_tags_change_after_the_fact() {
    let s = Stowage::new();
    let (a, b) = (s.path("dtr-registry-aaaa"), s.path("dtr-registry-bbbb"));
    for (dir, text) in [(&a, "volume a"), (&b, "volume b")] {
        std::fs::create_dir_all(dir.join("_data")).expect("mkdir");
        std::fs::write(dir.join("_data/file"), text).expect("write");
    }
    let (a, b) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    s.ok(&["init"]);
    settle();
    s.ok(&["backup", a, "--host", "h1", "--tag", "nightly"]);
    s.ok(&["backup", b, "--host", "h2"]);
    s.ok(&["backup", a, "--host", "h1"]);
    assert_eq!(rows(&s, &["snapshots", "--json"]).len(), 3);
    assert_eq!(rows(&s, &["snapshots", "--json", "--host", "h2"]).len(), 1);
    assert_eq!(
        rows(&s, &["snapshots", "--json", "--tag", "nightly"]).len(),
        1
    );
    assert_eq!(rows(&s, &["snapshots", "--json", "--path", a]).len(), 2);
    assert_eq!(
        rows(&s, &["snapshots", "--json", "--replica", "bbbb"]).len(),
        1
    );
    assert_eq!(
        rows(&s, &["snapshots", "--json", "--tag", "nightly,other"]).len(),
        0
    );

    // `latest` of a selection: the latest snapshot of B although A's is newer.
    let target = s.path("restored");
    let t = target.to_str().expect("utf-8");
    s.ok(&["restore", "latest", "--path", b, "--target", t]);
    assert_eq!(
        std::fs::read_to_string(target.join("dtr-registry-bbbb/_data/file")).expect("read"),
        "volume b"
    );
    assert!(s
        .fails(&["restore", "latest", "--host", "nobody", "--target", t])
        .contains("snapshot"));

    // Tags change after the fact; the listing shows them.
    s.ok(&["tag", "latest", "--path", a, "--add", "keep"]);
    let kept = rows(&s, &["snapshots", "--json", "--tag", "keep"]);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["source"]["uri"].as_str(), Some(a));
    s.ok(&["tag", "--host", "h1", "--remove", "nightly"]);
    assert!(rows(&s, &["snapshots", "--json", "--tag", "nightly"]).is_empty());
    assert_eq!(rows(&s, &["snapshots", "--json"]).len(), 3);
    let table = s.ok(&["snapshots"]);
    assert!(table.contains("tags") && table.contains("keep"), "{table}");

    // --keep-within keeps all of a recent night; forget of A's group with --prune leaves B.
    let plan = s.json(&["forget", "--keep-within", "1h", "--dry-run", "--json"]);
    let groups = plan["groups"].as_array().expect("groups");
    assert!(groups
        .iter()
        .flat_map(|g| g["snapshots"].as_array().expect("snapshots"))
        .all(|d| d["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == "within"))));
    let pruned = s.ok(&["forget", "--keep-last", "1", "--path", a, "--prune"]);
    assert!(
        pruned.contains("pruning") && pruned.contains("packs"),
        "{pruned}"
    );
    assert_eq!(rows(&s, &["snapshots", "--json", "--path", a]).len(), 1);
    assert_eq!(rows(&s, &["snapshots", "--json", "--path", b]).len(), 1);
    s.ok(&["check"]);
}
