//! The one Store conformance suite: every backend runs these checks (memory, filesystem,
//! and the real servers in integration tests). Each check panics with a message naming the
//! broken rule of the [`Store`] contract.

use bytes::Bytes;

use crate::store::{Store, StoreError};

/// Runs every check against an empty store.
pub async fn run_all(store: &dyn Store) {
    put_get_roundtrip(store).await;
    missing_objects(store).await;
    ranges(store).await;
    list_by_prefix(store).await;
    replace_and_delete(store).await;
    large_object(store).await;
    invalid_keys(store).await;
    uploads(store).await;
}

fn payload(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

pub async fn put_get_roundtrip(store: &dyn Store) {
    let data = payload(1000, 1);
    store.put("conf/a/one", data.clone()).await.expect("put");
    assert_eq!(
        store.get("conf/a/one").await.expect("get"),
        data,
        "get returns put bytes"
    );
    let head = store.head("conf/a/one").await.expect("head");
    assert_eq!((head.key.as_str(), head.size), ("conf/a/one", 1000), "head");
    store
        .put("conf/empty", Bytes::new())
        .await
        .expect("put empty");
    assert!(store.get("conf/empty").await.expect("get empty").is_empty());
}

pub async fn missing_objects(store: &dyn Store) {
    let not_found = |r: Result<(), StoreError>, op: &str| match r {
        Err(e) if e.is_not_found() => {}
        other => panic!("{op} of a missing key must be NotFound, got {other:?}"),
    };
    not_found(store.get("conf/missing").await.map(drop), "get");
    not_found(
        store.get_range("conf/missing", 0..1).await.map(drop),
        "get_range",
    );
    not_found(store.head("conf/missing").await.map(drop), "head");
    store
        .delete("conf/missing")
        .await
        .expect("delete of a missing key succeeds");
    assert!(store.list("conf-nothing/").await.expect("list").is_empty());
}

pub async fn ranges(store: &dyn Store) {
    let data = payload(4096, 2);
    store.put("conf/range", data.clone()).await.expect("put");
    let got = store
        .get_range("conf/range", 100..1100)
        .await
        .expect("range");
    assert_eq!(got, data.slice(100..1100), "range bytes");
    let tail = store
        .get_range("conf/range", 4000..9000)
        .await
        .expect("range past end");
    assert_eq!(tail, data.slice(4000..), "range past the end is clipped");
}

pub async fn list_by_prefix(store: &dyn Store) {
    for key in [
        "conf-list/a/1",
        "conf-list/a/2",
        "conf-list/b/1",
        "conf-listx/1",
    ] {
        store.put(key, payload(10, 3)).await.expect("put");
    }
    let mut keys: Vec<String> = store
        .list("conf-list/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["conf-list/a/1", "conf-list/a/2", "conf-list/b/1"],
        "list by dir prefix"
    );
    let loose = store.list("conf-lis").await.expect("list");
    assert_eq!(loose.len(), 4, "a prefix need not end at a '/'");
    let partial = store.list("conf-list/a/").await.expect("list");
    assert_eq!(partial.len(), 2, "list by nested prefix");
    assert!(partial.iter().all(|m| m.size == 10), "list reports sizes");
}

pub async fn replace_and_delete(store: &dyn Store) {
    store
        .put("conf/replace", payload(10, 4))
        .await
        .expect("put");
    store
        .put("conf/replace", payload(20, 5))
        .await
        .expect("put of an existing key succeeds");
    let got = store.get("conf/replace").await.expect("get");
    assert!(
        got == payload(10, 4) || got == payload(20, 5),
        "a second put keeps or replaces the whole object, got {} bytes",
        got.len()
    );
    store.delete("conf/replace").await.expect("delete");
    assert!(
        store
            .get("conf/replace")
            .await
            .is_err_and(|e| e.is_not_found()),
        "deleted"
    );
    let listed = store.list("conf/").await.expect("list");
    assert!(
        listed.iter().all(|m| m.key != "conf/replace"),
        "deleted objects are not listed"
    );
}

pub async fn large_object(store: &dyn Store) {
    let data = payload(24 << 20, 6);
    store
        .put("conf/large", data.clone())
        .await
        .expect("put large");
    assert_eq!(store.head("conf/large").await.expect("head").size, 24 << 20);
    let got = store.get("conf/large").await.expect("get large");
    assert!(got == data, "large object round trip");
    store.delete("conf/large").await.expect("delete");
}

pub async fn invalid_keys(store: &dyn Store) {
    for key in ["", "/abs", "a//b", "../escape", "a/../b", "sp ace"] {
        assert!(
            store.put(key, payload(1, 7)).await.is_err(),
            "key {key:?} must be refused"
        );
    }
}

pub async fn uploads(store: &dyn Store) {
    let data = payload(3 << 20, 8);
    let mut upload = store
        .start_upload("conf-up", 1 << 20)
        .await
        .expect("start upload");
    for part in data.chunks(700 << 10) {
        upload.write(part).expect("write part");
    }
    assert!(
        store.list("conf-up/").await.expect("list").is_empty(),
        "an unfinished upload is not an object"
    );
    upload
        .finish(store, "conf-up/ab/one")
        .await
        .expect("finish upload");
    assert!(
        store.get("conf-up/ab/one").await.expect("get upload") == data,
        "an upload stores what was written"
    );
    let mut dropped = store
        .start_upload("conf-up", 0)
        .await
        .expect("start upload");
    dropped.write(b"never finished").expect("write");
    drop(dropped);
    let mut empty = store
        .start_upload("conf-up", 0)
        .await
        .expect("start upload");
    empty.write(&[]).expect("write nothing");
    empty
        .finish(store, "conf-up/empty")
        .await
        .expect("finish empty");
    let mut keys: Vec<String> = store
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .filter(|k| k.starts_with("conf-up"))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["conf-up/ab/one", "conf-up/empty"],
        "finished uploads are listed, a dropped one is not an object (its leftovers on disk are checked per backend)"
    );
    let mut bad = store
        .start_upload("conf-up", 0)
        .await
        .expect("start upload");
    bad.write(b"x").expect("write");
    assert!(
        bad.finish(store, "../escape").await.is_err(),
        "an upload's key is checked like a put's"
    );
}
