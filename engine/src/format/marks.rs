//! Marks: packs a prune found unneeded and will delete once their grace period has passed
//! (FORMAT.md, "Marks and prune").
//!
//! A mark names a pack, when it was marked and the time from which a later prune may delete
//! it if it is still unneeded then. `marks/<id>` objects are sealed JSON and, like every
//! object, never change: a prune writes the marks still pending into a new file before
//! deleting the files it read. Two files naming one pack (a prune killed between the two
//! steps) mean the earliest deletion time. The mark of a deleted pack stays for one more
//! grace period (a tombstone), for the check below.
//!
//! Backups take no lock, so marks are how prune and backups stay out of each other's way:
//! - a backup never reuses a blob whose only indexed copy is in a marked pack (it stores the
//!   blob again), so nothing started after a mark depends on the marked pack;
//! - before writing its snapshot, a backup re-reads the marks and refuses to write the
//!   snapshot when a pack it relies on may be deleted within [`SAFETY_MARGIN`] (or was).
//!   Otherwise its snapshot exists before any prune may delete that pack, and that prune
//!   sees it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::id::Id;

/// How long before a marked pack may be deleted a snapshot relying on it is refused: the
/// time between that check and the snapshot's write, plus the clocks' disagreement.
pub const SAFETY_MARGIN: Duration = Duration::minutes(10);

/// The least time the mark of a deleted pack is kept: even with a short grace period (or
/// none, `--grace 0s`), a backup that was running is refused rather than left broken.
pub const TOMBSTONE_MIN: Duration = Duration::hours(24);

/// One marked pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub pack: Id,
    /// Unix seconds.
    pub marked: i64,
    /// Unix seconds from which a prune may delete the pack if still unreferenced.
    pub delete_after: i64,
}

impl Mark {
    pub fn new(pack: Id, now: DateTime<Utc>, grace: Duration) -> Self {
        Mark {
            pack,
            marked: now.timestamp(),
            delete_after: (now + grace).timestamp(),
        }
    }

    pub fn delete_after(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.delete_after, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether a prune at `now` may delete the pack.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.delete_after <= now.timestamp()
    }

    /// Whether the mark of a deleted pack is still kept at `now`: for one more grace period
    /// after the deletion time, and at least [`TOMBSTONE_MIN`], so that a backup that
    /// started before the mark and ran longer than the grace period still finds it and
    /// refuses its snapshot.
    pub fn tombstone_kept(&self, now: DateTime<Utc>) -> bool {
        let grace = self.delete_after.saturating_sub(self.marked).max(0);
        let keep = grace.max(TOMBSTONE_MIN.num_seconds());
        now.timestamp() < self.delete_after.saturating_add(keep)
    }
}

/// The JSON of a `marks/` object.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MarkFile {
    pub marks: Vec<Mark>,
}

/// Every mark in the repository.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// The `marks/` objects read.
    pub files: Vec<Id>,
    /// The earliest mark of each marked pack.
    pub by_pack: HashMap<Id, Mark>,
}

impl Marks {
    /// Adds a mark, keeping the earliest deletion time of a pack marked twice.
    pub fn add(&mut self, mark: Mark) {
        self.by_pack
            .entry(mark.pack)
            .and_modify(|m| {
                if mark.delete_after < m.delete_after {
                    *m = mark;
                }
            })
            .or_insert(mark);
    }

    pub fn is_marked(&self, pack: &Id) -> bool {
        self.by_pack.contains_key(pack)
    }

    pub fn packs(&self) -> HashSet<Id> {
        self.by_pack.keys().copied().collect()
    }

    /// Fails when a pack in `relied` may be deleted before a snapshot written now is seen
    /// by the prune that would delete it.
    pub fn check_relied(&self, relied: &HashSet<Id>, now: DateTime<Utc>) -> Result<()> {
        let limit = (now + SAFETY_MARGIN).timestamp();
        let doomed: Vec<&Mark> = relied
            .iter()
            .filter_map(|p| self.by_pack.get(p))
            .filter(|m| m.delete_after <= limit)
            .collect();
        match doomed.first() {
            None => Ok(()),
            Some(m) => Err(Error::PruneRace {
                packs: doomed.len(),
                example: m.pack,
                delete_after: m.delete_after(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_relying_on_a_pack_about_to_go_is_refused() {
        let now = Utc::now();
        let (soon, later, unmarked) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
        let mut marks = Marks::default();
        marks.add(Mark::new(soon, now, Duration::minutes(5)));
        marks.add(Mark::new(later, now, Duration::hours(24)));
        let relied = |ids: &[Id]| ids.iter().copied().collect::<HashSet<_>>();
        assert!(marks.check_relied(&relied(&[later, unmarked]), now).is_ok());
        match marks.check_relied(&relied(&[soon, later]), now) {
            Err(Error::PruneRace { packs, example, .. }) => {
                assert_eq!((packs, example), (1, soon));
            }
            other => panic!("expected a prune race, got {other:?}"),
        }
    }

    #[test]
    fn expiry_is_inclusive() {
        let now = Utc::now();
        let mark = Mark::new(Id([1; 32]), now, Duration::seconds(0));
        assert!(mark.expired(now));
        assert!(!Mark::new(Id([1; 32]), now, Duration::seconds(1)).expired(now));
    }
}
