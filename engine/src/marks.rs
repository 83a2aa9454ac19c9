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
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use stowage_backends::Store;

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;

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

#[derive(Debug, Default, Serialize, Deserialize)]
struct MarkFile {
    marks: Vec<Mark>,
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
    /// Reads every `marks/` object. A prune replaces mark files by writing the new one before
    /// deleting the old, so a file gone between listing and reading means a newer listing
    /// has its successor: read again.
    pub async fn load(store: &dyn Store, keys: &Keys) -> Result<Self> {
        for _ in 0..4 {
            if let Some(marks) = Self::try_load(store, keys).await? {
                return Ok(marks);
            }
        }
        Err(Error::Invalid(
            "mark files keep changing while being read (several prunes at once?); try again".into(),
        ))
    }

    async fn try_load(store: &dyn Store, keys: &Keys) -> Result<Option<Self>> {
        let files: Vec<Id> = store
            .list("marks/")
            .await?
            .iter()
            .filter_map(|m| m.key.strip_prefix("marks/")?.parse().ok())
            .collect();
        let read: Vec<Option<MarkFile>> = futures::stream::iter(files.clone())
            .map(|id| async move {
                let key = format!("marks/{id}");
                let sealed = match store.get(&key).await {
                    Ok(sealed) => sealed,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                if Id::hash_of(&sealed) != id {
                    return Err(Error::corrupt(key, "content does not match its name"));
                }
                let plain = keys.open(&sealed, || key.clone())?;
                serde_json::from_slice(&plain)
                    .map(Some)
                    .map_err(|e| Error::corrupt(key, e.to_string()))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let Some(read) = read.into_iter().collect::<Option<Vec<MarkFile>>>() else {
            return Ok(None);
        };
        let mut marks = Marks {
            files,
            by_pack: HashMap::new(),
        };
        for mark in read.into_iter().flat_map(|f| f.marks) {
            marks.add(mark);
        }
        Ok(Some(marks))
    }

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

/// Writes `marks` as one new `marks/` object (none when empty); returns its id.
pub async fn write(store: &dyn Store, keys: &Keys, marks: Vec<Mark>) -> Result<Option<Id>> {
    if marks.is_empty() {
        return Ok(None);
    }
    let plain = serde_json::to_vec(&MarkFile { marks }).expect("marks serialize");
    let sealed = keys.seal(&plain);
    let id = Id::hash_of(&sealed);
    store.put(&format!("marks/{id}"), sealed.into()).await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_backends::memory::MemoryStore;

    #[tokio::test]
    async fn marks_round_trip_and_the_earliest_wins() {
        let store = MemoryStore::new();
        let keys = Keys::random();
        let now = Utc::now();
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        write(
            &store,
            &keys,
            vec![
                Mark::new(a, now, Duration::hours(2)),
                Mark::new(b, now, Duration::hours(1)),
            ],
        )
        .await
        .expect("write");
        write(&store, &keys, vec![Mark::new(a, now, Duration::hours(1))])
            .await
            .expect("write");
        let marks = Marks::load(&store, &keys).await.expect("load");
        assert_eq!(marks.files.len(), 2);
        assert_eq!(
            marks.by_pack[&a].delete_after,
            (now + Duration::hours(1)).timestamp()
        );
        assert!(marks.is_marked(&b));
        assert!(write(&store, &keys, Vec::new())
            .await
            .expect("write")
            .is_none());
    }

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
