//! The Store conformance suite on the in-process backends.

use stowage_backends::conformance;
use stowage_backends::fs::FsStore;
use stowage_backends::memory::MemoryStore;
use stowage_backends::Store;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::create(dir.path().join("repo")).expect("create");
    conformance::run_all(&store).await;
    // Failed and dropped uploads and puts leave no temporary file behind.
    let left = stowage_backends::testing::temp_files(&dir.path().join("repo"));
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn fs_store_objects_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let store = FsStore::create(&root).expect("create");
    store
        .put("data/ab/obj", bytes::Bytes::from_static(b"x"))
        .await
        .expect("put");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("data")), 0o700);
    assert_eq!(mode(&root.join("data/ab")), 0o700);
    assert_eq!(mode(&root.join("data/ab/obj")), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(root.join("data/ab"))
        .expect("ls")
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary files stay behind");
}
