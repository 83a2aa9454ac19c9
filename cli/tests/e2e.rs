//! End to end: the real `stowage` binary on generated registry volumes, restores compared with
//! GNU tar and entry by entry, and bad input refused with clear errors.

mod common;

use std::path::{Path, PathBuf};

use stowage_fixtures::compare::tree_differences;
use stowage_fixtures::{generate, VolumeSpec};

use common::{gnu_tar_sha256, is_root, settle, walk_files, Stowage};

#[test]
fn nightly_backups_dedup_and_restore_exactly() {
    let s = Stowage::new();
    let volumes = s.path("volumes");
    let spec = VolumeSpec::new(7, 12 << 20);
    let night1 = generate(&spec, &volumes).expect("generate night 1");
    let name = format!("dtr-registry-{}", spec.replica);
    let volume = night1.root.to_str().expect("utf-8 path").to_string();
    if is_root() {
        // Owners must come back too when restoring as root.
        let v2 = night1.root.join("_data");
        std::os::unix::fs::chown(&v2, Some(1234), Some(5678)).expect("chown");
    }

    s.ok(&["init"]);
    settle();
    let first = s.json(&["backup", &volume, "--json"]);
    let first = &first["snapshot"]["summary"];
    assert_eq!(
        first["bytes_read"], first["bytes"],
        "night 1 reads everything"
    );

    let night2 = generate(&spec.clone().at_night(2), &volumes).expect("generate night 2");
    assert!(night2.written_bytes > 0);
    settle();
    let second = s.json(&["backup", &volume, "--json"]);
    let summary = &second["snapshot"]["summary"];
    let stored = summary["stored_bytes"].as_u64().expect("stored_bytes");
    let read = summary["bytes_read"].as_u64().expect("bytes_read");
    // Night 2 stores little more than its new bytes: the new blobs (gzip, stored raw) plus
    // changed trees and the index, bounded here at +5% + 256 KiB.
    let bound = night2.written_bytes + night2.written_bytes / 20 + (256 << 10);
    assert!(
        stored <= bound,
        "night 2 stored {stored} bytes for {} new bytes (bound {bound})",
        night2.written_bytes
    );
    assert!(
        read <= night2.written_bytes + (64 << 10),
        "night 2 read {read} bytes"
    );
    assert_eq!(
        second["snapshot"]["parent"],
        s.json(&["snapshots", "--json"])[0]["id"]
    );

    // Unchanged volume: nothing read, nothing stored.
    let third = s.json(&["backup", &volume, "--json"]);
    let summary = &third["snapshot"]["summary"];
    assert_eq!(summary["bytes_read"], 0);
    assert_eq!(summary["new_blobs"], 0);
    assert_eq!(summary["stored_bytes"], 0);
    let stats = s.json(&["stats", "--json"]);
    assert_eq!(stats["latest"]["bytes_read"], 0);
    assert_eq!(stats["snapshots"], 3);
    assert!(
        stats["dedup_ratio"].as_f64().expect("ratio") > 2.5,
        "{stats}"
    );

    let snapshots = s.json(&["snapshots", "--json"]);
    let rows = snapshots.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    for row in rows {
        for field in ["id", "time", "host", "source"] {
            assert!(
                !row[field].is_null(),
                "snapshots --json rows need {field}: {row}"
            );
        }
    }

    let listing = s.ok(&[
        "ls",
        "latest",
        &format!("{name}/_data/docker/registry/v2/repositories"),
    ]);
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with("/link") && l.contains(" 71 ")),
        "{listing}"
    );

    let target = s.path("restore");
    let restored = s.json(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(
        restored["summary"]["verified_blobs"]
            .as_u64()
            .expect("count")
            > 10
    );
    let diffs = tree_differences(&night2.root, &target.join(&name)).expect("compare");
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
    assert_eq!(
        gnu_tar_sha256(&volumes, &name),
        gnu_tar_sha256(&target, &name)
    );

    // A unique prefix of the first snapshot's id restores night 1 exactly.
    let first_id = rows[0]["id"].as_str().expect("id");
    let night1_target = s.path("restore-night1");
    s.ok(&[
        "restore",
        &first_id[..10],
        "--target",
        night1_target.to_str().expect("utf-8"),
    ]);
    let night1_copy = s.path("night1");
    let regenerated = generate(&spec, &night1_copy).expect("regenerate night 1");
    if is_root() {
        let data = regenerated.root.join("_data");
        std::os::unix::fs::chown(data, Some(1234), Some(5678)).expect("chown");
    }
    // Everything of the regenerated copy is deterministic, directory mtimes too.
    let diffs = tree_differences(&regenerated.root, &night1_target.join(&name)).expect("compare");
    assert!(
        diffs.is_empty(),
        "night 1 restore differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn bad_input_gives_clear_errors_and_damage_is_found() {
    let s = Stowage::new();
    let missing = s.run(&["snapshots"]);
    assert_eq!(missing.status.code(), Some(10), "no repository: exit 10");
    let missing = String::from_utf8_lossy(&missing.stderr);
    assert!(missing.contains("no stowage repository"), "{missing}");

    let volumes = s.path("volumes");
    let report = generate(&VolumeSpec::small(3), &volumes).expect("generate");
    s.ok(&["init"]);
    let again = s.fails(&["init"]);
    assert!(again.contains("already exists"), "{again}");
    s.ok(&["backup", report.root.to_str().expect("utf-8")]);

    let out = s
        .command(&["snapshots"])
        .env("STOWAGE_PASSWORD", "not the password")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12), "wrong password: exit 12");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));

    let no_source = s.fails(&["backup", s.path("nope").to_str().expect("utf-8")]);
    assert!(no_source.contains("nope"), "{no_source}");

    // Flip one byte in the middle of the largest pack.
    let mut packs: Vec<(u64, PathBuf)> = walk_files(&s.path("repo/data"))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).expect("stat").len(), p))
        .collect();
    packs.sort();
    let (size, pack) = packs.pop().expect("a pack");
    let mut bytes = std::fs::read(&pack).expect("read pack");
    bytes[(size / 3) as usize] ^= 0x01;
    std::fs::write(&pack, bytes).expect("write pack");
    let pack_id = pack
        .file_name()
        .expect("name")
        .to_str()
        .expect("utf-8")
        .to_string();

    s.ok(&["check"]); // structure is intact
    let damaged = s.fails(&["check", "--read-data"]);
    assert!(
        damaged.contains(&format!("pack {pack_id} is damaged")),
        "{damaged}"
    );
    assert!(damaged.contains("affects"), "{damaged}");
    // A subset that holds every pack finds it too; the seven parts of a week, one of them.
    let subset = s.fails(&["check", "--read-data-subset", "100%"]);
    assert!(
        subset.contains(&format!("pack {pack_id} is damaged")),
        "{subset}"
    );
    let failing_parts = (1..=7)
        .filter(|n| {
            !s.run(&["check", "--read-data-subset", &format!("{n}/7")])
                .status
                .success()
        })
        .count();
    assert_eq!(failing_parts, 1);

    let target = s.path("restore");
    let failed = s.fails(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert!(
        failed.contains("corrupt") && failed.contains(&pack_id[..16]),
        "{failed}"
    );
}

#[test]
fn two_backups_at_once_share_one_repository() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let volumes = s.path("volumes");
    let a = generate(&VolumeSpec::small(11), &volumes).expect("generate a");
    let b = generate(&VolumeSpec::small(12), &volumes).expect("generate b");
    let spawn = |root: &Path| {
        s.command(&["backup", root.to_str().expect("utf-8")])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (first, second) = (spawn(&a.root), spawn(&b.root));
    for child in [first, second] {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        s.json(&["snapshots", "--json"])
            .as_array()
            .expect("array")
            .len(),
        2
    );
    s.ok(&["check", "--read-data"]);
    for report in [&a, &b] {
        let name = report
            .root
            .file_name()
            .expect("name")
            .to_str()
            .expect("utf-8");
        let target = s.path(&format!("restore-{name}"));
        let snapshots = s.json(&["snapshots", "--json"]);
        let id = snapshots
            .as_array()
            .expect("array")
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["id"].as_str())
            .expect("snapshot of the volume")
            .to_string();
        s.ok(&["restore", &id, "--target", target.to_str().expect("utf-8")]);
        let diffs = tree_differences(&report.root, &target.join(name)).expect("compare");
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

#[test]
fn forget_removes_what_the_policy_does_not_keep() {
    let s = Stowage::new();
    let spec = VolumeSpec::small(12);
    let volumes = s.path("volumes");
    let root = generate(&spec, &volumes).expect("generate").root;
    let volume = root.to_str().expect("utf-8 path").to_string();
    s.ok(&["init"]);
    for tag in ["first", "second", "third"] {
        s.ok(&["backup", &volume, "--tag", tag]);
    }
    let ids = |s: &Stowage| -> Vec<String> {
        s.json(&["snapshots", "--json"])
            .as_array()
            .expect("list")
            .iter()
            .map(|snap| snap["id"].as_str().expect("id").to_string())
            .collect()
    };
    let before = ids(&s);
    assert_eq!(before.len(), 3);

    let err = s.fails(&["forget"]);
    assert!(err.contains("no keep rule"), "{err}");
    let plan = s.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "first",
        "--dry-run",
        "--json",
    ]);
    let decisions = plan["groups"][0]["snapshots"]
        .as_array()
        .expect("decisions");
    let removed: Vec<&str> = decisions
        .iter()
        .filter(|d| d["reasons"].as_array().is_some_and(|r| r.is_empty()))
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        removed,
        [before[1].as_str()],
        "only the middle snapshot goes"
    );
    assert_eq!(ids(&s), before, "a dry run removes nothing");

    s.ok(&["forget", "--keep-last", "1", "--keep-tag", "first"]);
    assert_eq!(ids(&s), [before[0].clone(), before[2].clone()]);
    s.ok(&["check"]);
    let target = s.path("restored");
    s.ok(&[
        "restore",
        &before[0],
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let differences =
        tree_differences(&root, &target.join(root.file_name().expect("name"))).expect("compare");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// What a registry volume holds, read straight from its files: tags -> manifest digest,
/// blobs -> size, repositories.
struct RegistryView {
    tags: std::collections::BTreeMap<(String, String), String>,
    blobs: std::collections::BTreeMap<String, u64>,
    repositories: std::collections::BTreeSet<String>,
}

fn registry_view(volume: &Path) -> RegistryView {
    let v2 = volume.join("_data/docker/registry/v2");
    let mut view = RegistryView {
        tags: Default::default(),
        blobs: Default::default(),
        repositories: Default::default(),
    };
    for file in walk_files(&v2) {
        let rel = file
            .strip_prefix(&v2)
            .expect("under v2")
            .to_str()
            .expect("utf-8")
            .to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        if let ["blobs", "sha256", _, hex, "data"] = parts.as_slice() {
            let size = std::fs::metadata(&file).expect("stat").len();
            view.blobs.insert(format!("sha256:{hex}"), size);
        }
        if let Some(rest) = rel.strip_prefix("repositories/") {
            if let Some((repo, tail)) = rest.split_once("/_manifests/") {
                view.repositories.insert(repo.to_string());
                if let Some(tag) = tail
                    .strip_prefix("tags/")
                    .and_then(|t| t.strip_suffix("/current/link"))
                {
                    let digest = std::fs::read_to_string(&file).expect("read link");
                    view.tags.insert(
                        (repo.to_string(), tag.to_string()),
                        digest.trim().to_string(),
                    );
                }
            }
        }
    }
    view
}

#[test]
fn diff_names_a_nights_registry_changes() {
    let s = Stowage::new();
    let spec = VolumeSpec::new(14, 8 << 20);
    let night1 = generate(&spec, &s.path("night1")).expect("night 1").root;
    let night2 = generate(&spec.clone().at_night(3), &s.path("night3"))
        .expect("night 3")
        .root;
    // The fixture never deletes a repository: delete one, as an operator would.
    let gone = registry_view(&night2)
        .repositories
        .into_iter()
        .next()
        .expect("a repository");
    std::fs::remove_dir_all(
        night2
            .join("_data/docker/registry/v2/repositories")
            .join(&gone),
    )
    .expect("delete a repository");
    s.ok(&["init"]);
    let id = |out: serde_json::Value| out["id"].as_str().expect("id").to_string();
    let a = id(s.json(&["backup", night1.to_str().expect("utf-8"), "--json"]));
    let b = id(s.json(&["backup", night2.to_str().expect("utf-8"), "--json"]));
    let diff = s.json(&["diff", &a, &b, "--json"]);

    let (before, after) = (registry_view(&night1), registry_view(&night2));
    let mut expected_tags = Vec::new();
    let keys: std::collections::BTreeSet<_> = before.tags.keys().chain(after.tags.keys()).collect();
    for key in keys {
        let (from, to) = (before.tags.get(key), after.tags.get(key));
        if from != to {
            expected_tags.push(serde_json::json!({
                "repository": key.0, "tag": key.1, "from": from, "to": to,
            }));
        }
    }
    assert!(!expected_tags.is_empty(), "the nights differ in tags");
    assert_eq!(diff["tags"], serde_json::Value::Array(expected_tags));
    let blob_changes = |x: &RegistryView, y: &RegistryView| {
        let changes: Vec<serde_json::Value> = y
            .blobs
            .iter()
            .filter(|(d, _)| !x.blobs.contains_key(*d))
            .map(|(d, size)| serde_json::json!({ "digest": d, "size": size }))
            .collect();
        serde_json::Value::Array(changes)
    };
    let sorted = |v: &serde_json::Value| {
        let mut items = v.as_array().expect("list").clone();
        items.sort_by_key(|i| i["digest"].as_str().unwrap_or_default().to_string());
        serde_json::Value::Array(items)
    };
    assert!(
        !blob_changes(&before, &after)
            .as_array()
            .expect("list")
            .is_empty(),
        "the nights differ in blobs"
    );
    assert_eq!(sorted(&diff["blobs_added"]), blob_changes(&before, &after));
    assert_eq!(
        sorted(&diff["blobs_removed"]),
        blob_changes(&after, &before)
    );
    let only = |x: &RegistryView, y: &RegistryView| -> Vec<String> {
        x.repositories
            .difference(&y.repositories)
            .cloned()
            .collect()
    };
    assert_eq!(
        diff["repositories_added"],
        serde_json::json!(only(&after, &before))
    );
    assert_eq!(
        diff["repositories_removed"],
        serde_json::json!(only(&before, &after))
    );
    assert!(
        diff["repositories_removed"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r == gone.as_str()),
        "{gone} was removed"
    );

    let same = s.json(&["diff", &a, &a, "--json"]);
    assert_eq!(same["tags"], serde_json::json!([]));
    assert_eq!(same["blobs_added"], serde_json::json!([]));
    assert_eq!(same["other_registry_files"], 0);
}

/// Every file below `dir`, by its path relative to `dir`.
fn relative_files(dir: &Path) -> std::collections::BTreeSet<String> {
    walk_files(dir)
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .expect("under dir")
                .to_str()
                .expect("utf-8")
                .to_string()
        })
        .collect()
}

/// The files (relative to `v2`) a registry needs to serve `repo:tag`, read from the volume.
fn needed_for(v2: &Path, repo: &str, tag: &str) -> std::collections::BTreeSet<String> {
    let mut needed = std::collections::BTreeSet::new();
    let read = |rel: &str| std::fs::read(v2.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        format!("blobs/sha256/{}/{hex}/data", &hex[..2])
    };
    let optional = |set: &mut std::collections::BTreeSet<String>, rel: String| {
        if v2.join(&rel).exists() {
            set.insert(rel);
        }
    };
    let current = format!("repositories/{repo}/_manifests/tags/{tag}/current/link");
    let digest = String::from_utf8(read(&current))
        .expect("utf-8")
        .trim()
        .to_string();
    needed.insert(current);
    let hex = digest.trim_start_matches("sha256:").to_string();
    optional(
        &mut needed,
        format!("repositories/{repo}/_manifests/tags/{tag}/index/sha256/{hex}/link"),
    );
    let mut pending = vec![digest];
    while let Some(digest) = pending.pop() {
        let hex = digest.trim_start_matches("sha256:").to_string();
        needed.insert(blob(&digest));
        optional(
            &mut needed,
            format!("repositories/{repo}/_manifests/revisions/sha256/{hex}/link"),
        );
        let doc: serde_json::Value = serde_json::from_slice(&read(&blob(&digest))).expect("JSON");
        if let Some(children) = doc["manifests"].as_array() {
            pending.extend(
                children
                    .iter()
                    .map(|c| c["digest"].as_str().expect("digest").to_string()),
            );
            continue;
        }
        let layers = doc["layers"].as_array().cloned().unwrap_or_default();
        for d in std::iter::once(&doc["config"]).chain(layers.iter()) {
            let digest = d["digest"].as_str().expect("digest");
            needed.insert(blob(digest));
            let hex = digest.trim_start_matches("sha256:");
            optional(
                &mut needed,
                format!("repositories/{repo}/_layers/sha256/{hex}/link"),
            );
        }
    }
    needed
}

#[test]
fn partial_restore_brings_back_what_a_tag_needs_and_nothing_else() {
    let s = Stowage::new();
    let spec = VolumeSpec::new(15, 10 << 20);
    let root = generate(&spec, &s.path("volumes")).expect("generate").root;
    s.ok(&["init"]);
    s.ok(&["backup", root.to_str().expect("utf-8")]);
    let v2 = root.join("_data/docker/registry/v2");
    let view = registry_view(&root);
    // One multi-arch tag (an index or manifest list) and one plain image, where present.
    let is_index = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        let doc = std::fs::read(v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])))
            .expect("manifest");
        serde_json::from_slice::<serde_json::Value>(&doc).expect("JSON")["manifests"].is_array()
    };
    let mut picks: Vec<&(String, String)> = Vec::new();
    picks.extend(view.tags.iter().find(|(_, d)| is_index(d)).map(|(k, _)| k));
    picks.extend(view.tags.iter().find(|(_, d)| !is_index(d)).map(|(k, _)| k));
    assert_eq!(
        picks.len(),
        2,
        "the volume has a multi-arch tag and a single-image one"
    );
    for (repo, tag) in picks {
        let target = s.path(&format!("partial-{}-{tag}", repo.replace('/', "_")));
        s.ok(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
            "--include",
            &format!("{repo}:{tag}"),
        ]);
        let restored_v2 = target
            .join(root.file_name().expect("name"))
            .join("_data/docker/registry/v2");
        let restored = relative_files(&restored_v2);
        assert_eq!(restored, needed_for(&v2, repo, tag), "{repo}:{tag}");
        for rel in &restored {
            assert_eq!(
                std::fs::read(restored_v2.join(rel)).expect("restored"),
                std::fs::read(v2.join(rel)).expect("original"),
                "{rel}"
            );
        }
    }
    let nowhere = s.path("none");
    let nowhere = nowhere.to_str().expect("utf-8");
    let err = s.fails(&[
        "restore",
        "latest",
        "--target",
        nowhere,
        "--include",
        "no/such:tag",
    ]);
    assert!(err.contains("no repository no/such"), "{err}");
    let (repo, _) = view.tags.keys().next().expect("a tag");
    let err = s.fails(&[
        "restore",
        "latest",
        "--target",
        nowhere,
        "--include",
        &format!("{repo}:no-such-tag"),
    ]);
    assert!(err.contains(&format!("no tag {repo}:no-such-tag")), "{err}");

    // A whole repository: every tag's link comes back, and with two includes, both images.
    let whole = s.path("whole");
    let others: Vec<&(String, String)> = view
        .tags
        .keys()
        .filter(|(r, _)| r != repo)
        .take(1)
        .collect();
    assert_eq!(others.len(), 1, "the volume has a second repository");
    let mut args = vec![
        "restore",
        "latest",
        "--target",
        whole.to_str().expect("utf-8"),
        "--include",
        repo.as_str(),
    ];
    let other_include = format!("{}:{}", others[0].0, others[0].1);
    args.extend(["--include", other_include.as_str()]);
    s.ok(&args);
    let whole_v2 = whole
        .join(root.file_name().expect("name"))
        .join("_data/docker/registry/v2");
    let mut expected = std::collections::BTreeSet::new();
    for (r, t) in view.tags.keys().filter(|(r, _)| r == repo).chain(others) {
        expected.extend(needed_for(&v2, r, t));
    }
    let restored = relative_files(&whole_v2);
    assert_eq!(restored, expected);
}
