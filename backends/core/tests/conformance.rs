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
    fn temp_files(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(temp_files(&path));
            } else if path.to_string_lossy().contains(".stowage-tmp-") {
                out.push(path.display().to_string());
            }
        }
        out
    }
    assert_eq!(temp_files(&dir.path().join("repo")), Vec::<String>::new());
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
