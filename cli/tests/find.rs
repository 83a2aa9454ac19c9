//! `find`: which snapshots hold a registry blob (by digest) or the paths matching a pattern.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use stowage_fixtures::{generate, VolumeSpec};

use common::{settle, Stowage};

/// The digests of the registry blobs in a volume.
fn digests(volume: &Path) -> BTreeSet<String> {
    let blobs = volume.join("_data/docker/registry/v2/blobs/sha256");
    let mut found = BTreeSet::new();
    for shard in std::fs::read_dir(blobs).expect("blobs") {
        for blob in std::fs::read_dir(shard.expect("shard").path()).expect("shard") {
            found.insert(
                blob.expect("blob")
                    .file_name()
                    .to_string_lossy()
                    .to_string(),
            );
        }
    }
    found
}

fn hits(s: &Stowage, args: &[&str]) -> Vec<Value> {
    s.json(args).as_array().expect("a JSON array").clone()
}

#[test]
fn find_names_the_snapshots_holding_a_blob_or_a_path() {
    let s = Stowage::new();
    let spec = VolumeSpec::new(31, 2 << 20);
    let night1 = generate(&spec, &s.path("volumes")).expect("night 1");
    let volume = night1.root.to_str().expect("utf-8").to_string();
    s.ok(&["init"]);
    settle();
    s.ok(&["backup", &volume]);
    let first = digests(&night1.root);
    generate(&spec.clone().at_night(2), &s.path("volumes")).expect("night 2");
    settle();
    s.ok(&["backup", &volume]);
    let second = digests(&night1.root);
    let ids: Vec<String> = hits(&s, &["snapshots", "--json"])
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();

    let both = first
        .intersection(&second)
        .next()
        .expect("a blob both nights hold");
    let found = hits(
        &s,
        &["find", "--digest", &format!("sha256:{both}"), "--json"],
    );
    let snapshots: Vec<&str> = found
        .iter()
        .map(|h| h["snapshot"].as_str().expect("id"))
        .collect();
    assert_eq!(snapshots, [ids[0].as_str(), ids[1].as_str()], "{found:?}");
    assert!(found[0]["path"]
        .as_str()
        .expect("path")
        .ends_with(&format!("{both}/data")));
    if let Some(new) = second.difference(&first).next() {
        let found = hits(&s, &["find", "--digest", new, "--json"]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["snapshot"].as_str(), Some(ids[1].as_str()));
    }
    // The text form: one line per snapshot, its short id first.
    let text = s.ok(&["find", "--digest", both]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&ids[0][..8]), "{text}");

    // Nothing found: exit 1, like grep.
    let absent = "0".repeat(64);
    assert_eq!(s.run(&["find", "--digest", &absent]).status.code(), Some(1));
    assert!(s
        .fails(&["find", "--digest", "sha256:xyz"])
        .contains("not a sha256 digest"));

    // Paths by pattern, across both snapshots.
    let tags = hits(&s, &["find", "**/_manifests/tags/*/current/link", "--json"]);
    assert!(!tags.is_empty());
    for hit in &tags {
        assert!(
            hit["path"]
                .as_str()
                .expect("path")
                .ends_with("/current/link"),
            "{hit}"
        );
    }
    let named = hits(&s, &["find", "link", "--json"]);
    assert!(named.len() > tags.len(), "every link file, by name");
}
