//! Which snapshots a retention policy keeps (`stowage forget`), and removing the others.
//!
//! Snapshots are grouped by host and source; in each group, newest first, a snapshot is kept
//! when any rule keeps it:
//! - `last N`: the N newest;
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of the N newest
//!   hours, days, ISO weeks, months or years that have snapshots (times in UTC);
//! - `tags`: every snapshot carrying one of the tags;
//! - `within D`: every snapshot less than D older than the group's newest (restic's
//!   `--keep-within`: a backup that stopped running does not lose its last ones to time).
//!
//! Forgetting removes only `snapshots/<id>` objects; the data they alone used is collected
//! by prune.

use std::collections::{BTreeMap, HashSet};

use chrono::{Datelike, Timelike};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::repo::Repository;

/// How many snapshots each rule keeps (0: the rule is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
    pub tags: Vec<String>,
    pub within: Option<chrono::Duration>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The rules that keep it (`last`, `daily`, `tag:nightly`, ...); empty: it goes.
    pub reasons: Vec<String>,
}

/// One host and source, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub host: String,
    pub source: String,
    pub snapshots: Vec<Decision>,
}

impl Group {
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.snapshots.iter().filter(|d| d.reasons.is_empty())
    }
}

/// Applies `policy` to every group of `snapshots`.
pub fn plan(snapshots: &[(Id, Snapshot)], policy: &KeepPolicy) -> Result<Vec<Group>> {
    if policy.is_empty() {
        return Err(Error::usage(
            "no keep rule given: forget would remove every snapshot; pass --keep-last, \
             --keep-daily, ..., --keep-within or --keep-tag",
        ));
    }
    let mut groups: BTreeMap<(String, String), Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for entry in snapshots {
        groups
            .entry((entry.1.host.clone(), group_source(&entry.1)))
            .or_default()
            .push(entry);
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|((host, source), mut members)| {
            members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
            Group {
                host,
                source,
                snapshots: decide(&members, policy),
            }
        })
        .collect();
    // A typo in a tag must not empty a group: keeping nothing is never what a policy means.
    if let Some(group) = groups
        .iter()
        .find(|g| g.removed().count() == g.snapshots.len())
    {
        return Err(Error::Usage(format!(
            "the policy keeps no snapshot of {} {}; refusing to remove all {} of them",
            group.host,
            group.source,
            group.snapshots.len()
        )));
    }
    Ok(groups)
}

/// What a snapshot's group is named by besides its host: its source — for tars read from
/// stdin or from dated files, the replica or backed-up directory instead of the file name.
fn group_source(snapshot: &Snapshot) -> String {
    let replica = snapshot.replica_id.as_deref().unwrap_or("-");
    match snapshot.source.kind.as_str() {
        "dtr-metadata" => format!("dtr-metadata (replica {replica})"),
        "tar" => format!("tar:{}", snapshot.name),
        kind => format!("{kind}:{}", snapshot.source.uri),
    }
}

/// The bucket a time falls in for each periodic rule.
fn buckets(time: &chrono::DateTime<chrono::Utc>) -> [(&'static str, i64); 5] {
    let (year, month, day) = (
        i64::from(time.year()),
        i64::from(time.month()),
        i64::from(time.day()),
    );
    let week = time.iso_week();
    [
        (
            "hourly",
            ((year * 100 + month) * 100 + day) * 100 + i64::from(time.hour()),
        ),
        ("daily", (year * 100 + month) * 100 + day),
        (
            "weekly",
            i64::from(week.year()) * 100 + i64::from(week.week()),
        ),
        ("monthly", year * 100 + month),
        ("yearly", year),
    ]
}

fn decide(members: &[&(Id, Snapshot)], policy: &KeepPolicy) -> Vec<Decision> {
    let limits = [
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
        ("yearly", policy.yearly),
    ];
    // Per rule: the buckets seen so far (newest first); a snapshot opening a new bucket is
    // that bucket's newest and is kept while the rule has room.
    let mut seen: BTreeMap<&str, HashSet<i64>> = BTreeMap::new();
    let newest = members.first().map(|(_, s)| s.time);
    members
        .iter()
        .enumerate()
        .map(|(i, (id, snap))| {
            let mut reasons = Vec::new();
            if i < policy.last {
                reasons.push("last".to_string());
            }
            for ((rule, bucket), (_, limit)) in buckets(&snap.time).into_iter().zip(limits) {
                let seen = seen.entry(rule).or_default();
                if seen.len() < limit && seen.insert(bucket) {
                    reasons.push(rule.to_string());
                }
            }
            if let (Some(within), Some(newest)) = (policy.within, newest) {
                if newest - snap.time < within {
                    reasons.push("within".to_string());
                }
            }
            for tag in &policy.tags {
                if snap.tags.contains(tag) {
                    reasons.push(format!("tag:{tag}"));
                }
            }
            Decision {
                id: *id,
                time: snap.time,
                reasons,
            }
        })
        .collect()
}

/// Removes the snapshots the plan does not keep; returns how many were removed. A snapshot
/// object under retention (S3 Object Lock) is refused by the store, and the error says so.
pub async fn forget(repo: &Repository, groups: &[Group]) -> Result<u64> {
    let ids: Vec<Id> = groups
        .iter()
        .flat_map(Group::removed)
        .map(|d| d.id)
        .collect();
    remove(repo, &ids).await
}

/// Removes the snapshots `ids`; returns how many were removed.
pub async fn remove(repo: &Repository, ids: &[Id]) -> Result<u64> {
    for id in ids {
        repo.store().delete(&format!("snapshots/{id}")).await?;
    }
    Ok(ids.len() as u64)
}
