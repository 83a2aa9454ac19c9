//! Object Lock against the real S3 server: retention and storage class on writes, and
//! deletes of retained objects refused.

use std::time::SystemTime;

use stowage_backends::{Store, StoreError};
use stowage_s3::testing::MotoServer;
use stowage_s3::{LockMode, ObjectLock, S3Options, S3Store, S3Url};

fn url(s: &str) -> S3Url {
    S3Url::parse(s).expect("an s3 url").expect("valid")
}

#[tokio::test(flavor = "multi_thread")]
async fn locked_objects_carry_retention_and_cannot_be_deleted() {
    let server = MotoServer::start();
    server.create_bucket("vault", true).await;
    let options = S3Options {
        lock: Some(ObjectLock {
            mode: LockMode::Governance,
            days: 2,
        }),
        storage_class: Some("STANDARD_IA".into()),
        ..server.options()
    };
    let store = S3Store::open(url("s3://vault/offsite"), &options)
        .await
        .expect("open");
    let pack = format!("data/ab/{}", "ab".repeat(32));
    store
        .put(&pack, vec![7u8; 3 << 20].into())
        .await
        .expect("put pack");
    store.put("config", "{1}".into()).await.expect("put config");
    // A second put of the key is refused by If-None-Match and the first object stays; an
    // object of the same size counts as the same (keys are content hashes), another size
    // is an error rather than a silent success.
    store.put("config", "{2}".into()).await.expect("put again");
    assert_eq!(
        store.get("config").await.expect("get"),
        "{1}",
        "the first object stays"
    );
    let err = store
        .put("config", "{22}".into())
        .await
        .expect_err("a different object");
    assert!(err.to_string().contains("in the way"), "{err}");

    let info = store.object_info(&pack).await.expect("info");
    assert_eq!(info.lock_mode.as_deref(), Some("GOVERNANCE"));
    assert_eq!(
        info.storage_class.as_deref(),
        Some("STANDARD_IA"),
        "packs get the class"
    );
    let until = info.retain_until.expect("retained");
    let days = until
        .duration_since(SystemTime::now())
        .expect("in the future")
        .as_secs()
        / 86_400;
    assert!(
        (1..=2).contains(&days),
        "about two days of retention, got {days}"
    );
    let config = store.object_info("config").await.expect("info");
    assert_eq!(
        config.lock_mode.as_deref(),
        Some("GOVERNANCE"),
        "every object is locked"
    );
    assert_eq!(config.storage_class, None, "only packs change class");

    match store.delete(&pack).await {
        Err(StoreError::Locked { key, until, .. }) => {
            assert_eq!(key, pack);
            assert!(!until.is_empty());
        }
        other => panic!("deleting a retained pack must fail with Locked, got {other:?}"),
    }
    assert_eq!(
        store.get(&pack).await.expect("still there").len(),
        3 << 20,
        "the refused delete left the pack in place"
    );
    // Objects written without retention delete normally in the same bucket.
    let plain = S3Store::open(url("s3://vault/scratch"), &server.options())
        .await
        .expect("open");
    plain.put("x", "y".into()).await.expect("put");
    plain.delete("x").await.expect("unlocked objects delete");
    assert!(plain.get("x").await.is_err_and(|e| e.is_not_found()));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_on_a_bucket_without_object_lock_is_a_clear_error() {
    let server = MotoServer::start();
    server.create_bucket("plain", false).await;
    let options = S3Options {
        lock: Some("compliance:1d".parse().expect("lock")),
        ..server.options()
    };
    let store = S3Store::open(url("s3://plain/repo"), &options)
        .await
        .expect("open");
    let err = store
        .put("config", "{}".into())
        .await
        .expect_err("no Object Lock on the bucket");
    assert!(err.to_string().contains("s3://plain/repo"), "{err}");
    assert!(err.to_string().to_lowercase().contains("lock"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_default_retention_is_taken_without_options() {
    let server = MotoServer::start();
    server.create_bucket("defaulted", true).await;
    server.set_default_retention("defaulted", 3).await;
    let store = S3Store::open(url("s3://defaulted/repo"), &server.options())
        .await
        .expect("open");
    assert_eq!(
        store.lock(),
        Some(ObjectLock {
            mode: LockMode::Governance,
            days: 3
        })
    );
    assert!(store.retains());
    store.put("config", "{}".into()).await.expect("put");
    let info = store.object_info("config").await.expect("info");
    let days = info
        .retain_until
        .expect("retained")
        .duration_since(SystemTime::now())
        .expect("future")
        .as_secs()
        / 86_400;
    assert!(
        days >= 3,
        "written with the bucket's period plus slack: {days} days"
    );
    assert!(matches!(
        store.delete("config").await,
        Err(StoreError::Locked { .. })
    ));

    server.create_bucket("unlocked", false).await;
    let plain = S3Store::open(url("s3://unlocked/repo"), &server.options())
        .await
        .expect("open");
    assert_eq!(plain.lock(), None);
    assert!(!plain.retains());
}
