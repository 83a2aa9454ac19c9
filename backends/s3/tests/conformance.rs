//! The Store conformance suite against a real S3 server (moto on loopback).

use stowage_backends::conformance;
use stowage_s3::testing::MotoServer;
use stowage_s3::{S3Options, S3Store, S3Url};

fn url(s: &str) -> S3Url {
    S3Url::parse(s).expect("an s3 url").expect("valid")
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_passes_the_conformance_suite() {
    let server = MotoServer::start();
    server.create_bucket("conformance", false).await;
    let store = S3Store::open(url("s3://conformance/repo/one"), &server.options())
        .await
        .expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_at_the_bucket_root_and_in_parts() {
    let server = MotoServer::start();
    server.create_bucket("rooted", false).await;
    let options = S3Options {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..server.options()
    };
    let store = S3Store::open(url("s3://rooted"), &options)
        .await
        .expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bucket_is_a_clear_error() {
    let server = MotoServer::start();
    let err = S3Store::open(url("s3://no-such-bucket/x"), &server.options())
        .await
        .expect_err("no bucket");
    assert!(
        !err.is_not_found(),
        "a missing bucket is not a missing object: {err}"
    );
    assert!(
        err.to_string().contains("s3://no-such-bucket/x")
            && err
                .to_string()
                .contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
}
