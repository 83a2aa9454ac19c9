//! Retention policies over 400 nightly snapshots: exactly which ones each rule keeps.

use stowage_engine::forget::{plan, KeepPolicy};
use stowage_engine::Id;
use stowage_engine::{Snapshot, SourceRef, Summary};

/// One snapshot a night at 02:00 UTC from 2025-01-01 to 2026-02-04, for `host`; the first of
/// each month tagged `monthly-full`.
fn nights(host: &str) -> Vec<(Id, Snapshot)> {
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z")
        .expect("time")
        .to_utc();
    (0..400)
        .map(|night| {
            let time = start + chrono::Duration::days(night);
            let tags = match chrono::Datelike::day(&time) {
                1 => vec!["monthly-full".to_string()],
                _ => Vec::new(),
            };
            let snapshot = Snapshot {
                time,
                host: host.into(),
                source: SourceRef {
                    kind: "fs".into(),
                    uri: "/var/lib/docker/volumes/dtr-registry-0123456789ab".into(),
                },
                name: "dtr-registry-0123456789ab".into(),
                replica_id: None,
                dtr_version: None,
                tags,
                parent: None,
                tree: Id::hash_of(b"tree"),
                summary: Summary::default(),
                program_version: "test".into(),
                original: None,
                repaired_from: None,
                tar: None,
                tables: None,
            };
            (Id::hash_of(format!("{host}{night}").as_bytes()), snapshot)
        })
        .collect()
}

/// The dates `policy` keeps, newest first.
fn kept(snapshots: &[(Id, Snapshot)], policy: KeepPolicy) -> Vec<String> {
    let groups = plan(snapshots, &policy).expect("plan");
    assert_eq!(groups.len(), 1);
    groups[0]
        .snapshots
        .iter()
        .filter(|d| !d.reasons.is_empty())
        .map(|d| d.time.format("%Y-%m-%d").to_string())
        .collect()
}

#[test]
fn each_rule_keeps_exactly_its_snapshots() {
    let all = nights("dtr-1");
    let policy = |f: fn(&mut KeepPolicy)| {
        let mut p = KeepPolicy::default();
        f(&mut p);
        p
    };
    assert_eq!(
        kept(&all, policy(|p| p.last = 3)),
        ["2026-02-04", "2026-02-03", "2026-02-02"]
    );
    assert_eq!(
        kept(&all, policy(|p| p.hourly = 2)),
        ["2026-02-04", "2026-02-03"],
        "one snapshot an hour apart at most: the newest two hours"
    );
    assert_eq!(
        kept(&all, policy(|p| p.daily = 5)),
        [
            "2026-02-04",
            "2026-02-03",
            "2026-02-02",
            "2026-02-01",
            "2026-01-31"
        ]
    );
    // 2026-02-04 is a Wednesday: its ISO week, then the Sundays ending the weeks before.
    assert_eq!(
        kept(&all, policy(|p| p.weekly = 4)),
        ["2026-02-04", "2026-02-01", "2026-01-25", "2026-01-18"]
    );
    assert_eq!(
        kept(&all, policy(|p| p.monthly = 3)),
        ["2026-02-04", "2026-01-31", "2025-12-31"]
    );
    assert_eq!(
        kept(&all, policy(|p| p.yearly = 3)),
        ["2026-02-04", "2025-12-31"],
        "only two years have snapshots"
    );
    let tagged = kept(&all, policy(|p| p.tags = vec!["monthly-full".into()]));
    assert_eq!(tagged.len(), 14);
    assert!(tagged.iter().all(|d| d.ends_with("-01")));

    // Rules together keep the union, each snapshot saying why.
    let combined = KeepPolicy {
        daily: 7,
        weekly: 4,
        monthly: 12,
        yearly: 3,
        ..KeepPolicy::default()
    };
    let mut dates = kept(&all, combined.clone());
    dates.reverse();
    assert_eq!(
        dates,
        [
            "2025-03-31",
            "2025-04-30",
            "2025-05-31",
            "2025-06-30",
            "2025-07-31",
            "2025-08-31",
            "2025-09-30",
            "2025-10-31",
            "2025-11-30",
            "2025-12-31",
            "2026-01-18",
            "2026-01-25",
            "2026-01-29",
            "2026-01-30",
            "2026-01-31",
            "2026-02-01",
            "2026-02-02",
            "2026-02-03",
            "2026-02-04"
        ]
    );
    let groups = plan(&all, &combined).expect("plan");
    let newest = &groups[0].snapshots[0];
    assert_eq!(newest.reasons, ["daily", "weekly", "monthly", "yearly"]);
    assert_eq!(groups[0].removed().count(), 400 - 19);
}

#[test]
fn groups_are_by_host_and_source_and_an_empty_policy_is_refused() {
    let mut all = nights("dtr-1");
    all.extend(nights("dtr-2").into_iter().take(10));
    let groups = plan(
        &all,
        &KeepPolicy {
            last: 2,
            ..KeepPolicy::default()
        },
    )
    .expect("plan");
    let summary: Vec<(&str, usize, usize)> = groups
        .iter()
        .map(|g| (g.host.as_str(), g.snapshots.len(), g.removed().count()))
        .collect();
    assert_eq!(summary, [("dtr-1", 400, 398), ("dtr-2", 10, 8)]);
    let err = plan(&all, &KeepPolicy::default()).expect_err("no rule");
    assert!(err.to_string().contains("no keep rule"), "{err}");
}

#[test]
fn metadata_from_stdin_groups_by_replica_and_a_policy_keeping_nothing_is_refused() {
    let mut all = Vec::new();
    for replica in ["aaaaaaaaaaaa", "bbbbbbbbbbbb"] {
        for (id, mut snap) in nights("admin").into_iter().take(5) {
            snap.source = SourceRef {
                kind: "dtr-metadata".into(),
                uri: "stdin".into(),
            };
            snap.replica_id = Some(replica.into());
            all.push((Id::hash_of(format!("{replica}{id}").as_bytes()), snap));
        }
    }
    let groups = plan(
        &all,
        &KeepPolicy {
            last: 2,
            ..KeepPolicy::default()
        },
    )
    .expect("plan");
    let kept: Vec<(String, usize)> = groups
        .iter()
        .map(|g| (g.source.clone(), g.snapshots.len() - g.removed().count()))
        .collect();
    assert_eq!(
        kept,
        [
            ("dtr-metadata (replica aaaaaaaaaaaa)".to_string(), 2),
            ("dtr-metadata (replica bbbbbbbbbbbb)".to_string(), 2)
        ],
        "each cluster keeps its own two"
    );
    let typo = KeepPolicy {
        tags: vec!["nighty".into()],
        ..KeepPolicy::default()
    };
    let err = plan(&all, &typo).expect_err("keeps nothing");
    assert!(err.to_string().contains("keeps no snapshot"), "{err}");
}
