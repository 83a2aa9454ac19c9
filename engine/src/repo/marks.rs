//! Reading and writing `marks/` objects (FORMAT.md, "Marks"); what a mark means and how
//! backups and prunes use them is in [`crate::format::marks`].

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use stowage_backends::Store;

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::id::Id;
use crate::format::marks::{Mark, MarkFile, Marks};

/// Reads every `marks/` object. A prune replaces mark files by writing the new one before
/// deleting the old, so a file gone between listing and reading means a newer listing
/// has its successor: read again.
pub async fn load(store: &dyn Store, keys: &Keys) -> Result<Marks> {
    for _ in 0..4 {
        if let Some(marks) = try_load(store, keys).await? {
            return Ok(marks);
        }
    }
    Err(Error::Conflict(
        "mark files keep changing while being read (several prunes at once?); try again".into(),
    ))
}

async fn try_load(store: &dyn Store, keys: &Keys) -> Result<Option<Marks>> {
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
    use chrono::{Duration, Utc};
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
        let marks = load(&store, &keys).await.expect("load");
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
}
