//! The Store conformance suite against a real NFS server (NFS-Ganesha on loopback, NFSv3),
//! reached through `nfs://` without a mount.

use std::io;

use stowage_backends::testing::temp_files;
use stowage_backends::{conformance, Store};
use stowage_nfs::testing::{free_port, Ganesha};
use stowage_nfs::NfsStore;

#[tokio::test(flavor = "multi_thread")]
async fn nfs_store_passes_the_conformance_suite() {
    let server = Ganesha::start();
    let store = NfsStore::create(&server.url("repos/one"))
        .await
        .expect("create the store below the export");
    conformance::run_all(&store).await;
    // Objects are plain files on the export, and no temporary file is left behind.
    let on_disk = server.export().join("repos/one/conf/a/one");
    assert_eq!(
        std::fs::read(&on_disk).expect("object on the export").len(),
        1000
    );
    // Abandoned uploads are removed in the background: give that a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let leftovers = temp_files(&server.export());
        if leftovers.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "temporary files left: {leftovers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nfs_store_at_the_export_root_with_one_connection() {
    let server = Ganesha::start();
    let mut url = server.url("");
    url.connections = Some(1);
    let store = NfsStore::open(&url).await.expect("open the export");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_path_and_unreachable_server_are_clear_errors() {
    let server = Ganesha::start();
    let err = NfsStore::open(&server.url("no/such/dir"))
        .await
        .expect_err("no such path");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");

    let mut url = server.url("");
    url.nfs_port = Some(free_port());
    url.mount_port = url.nfs_port;
    let err = NfsStore::open(&url)
        .await
        .expect_err("nothing listens there");
    assert!(
        err.to_string().contains("cannot reach the NFS server"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_survives_a_server_restart() {
    let mut server = Ganesha::start();
    let store = NfsStore::create(&server.url("repo")).await.expect("create");
    store
        .put("data/ab/one", bytes::Bytes::from_static(b"before"))
        .await
        .expect("put");
    // Restarted in a helper thread while requests go on: pooled connections break and are
    // made again, cached directory handles stay valid.
    tokio::task::block_in_place(|| server.restart());
    assert_eq!(
        &store.get("data/ab/one").await.expect("get after restart")[..],
        b"before"
    );
    store
        .put("data/ab/two", bytes::Bytes::from_static(b"after"))
        .await
        .expect("put after restart");
    let mut keys: Vec<String> = store
        .list("data/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["data/ab/one", "data/ab/two"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_removed_and_made_again_behind_the_store_is_found_again() {
    let server = Ganesha::start();
    let store = NfsStore::create(&server.url("repo")).await.expect("create");
    store
        .put("data/ab/one", bytes::Bytes::from_static(b"one"))
        .await
        .expect("put");
    // Someone else replaces the directory: the cached handle goes stale (ESTALE).
    let dir = server.export().join("repo/data/ab");
    std::fs::remove_dir_all(&dir).expect("remove");
    std::fs::create_dir(&dir).expect("make again");
    store
        .put("data/ab/two", bytes::Bytes::from_static(b"two"))
        .await
        .expect("put into the new directory");
    assert_eq!(
        std::fs::read(dir.join("two")).expect("on the export"),
        b"two"
    );
    assert!(store
        .get("data/ab/one")
        .await
        .is_err_and(|e| e.is_not_found()));
}
