//! NFS end to end against a real NFS server (NFS-Ganesha on loopback, NFSv3 over TCP, started
//! per test), with no mount: a registry volume on the export backed up through `nfs://` and
//! restored exactly to a directory and back onto the export; change detection across a
//! server restart; a repository on the export; clear errors for an unreachable server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_tree, dir_name, gnu_tar_sha256, settle, summary_u64, Stowage};
use stowage_fixtures::{generate, VolumeSpec};
use stowage_nfs::testing::{free_port, Ganesha};

/// `cp -a`, to keep a reference copy of a volume before it is wiped.
fn copy_tree(from: &Path, to_parent: &Path) -> PathBuf {
    std::fs::create_dir_all(to_parent).expect("mkdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to_parent)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a failed");
    to_parent.join(from.file_name().expect("a name"))
}

#[test]
fn a_volume_on_an_export_backs_up_through_nfs_and_restores_exactly() {
    let mut server = Ganesha::start();
    let s = Stowage::new();
    let spec = VolumeSpec::new(61, 12 << 20);
    let report = generate(&spec, &server.export()).expect("generate on the export");
    let root = report.root.clone();
    let name = dir_name(&root);
    let url = server.url(&name).to_string();
    // Many directories, restored at once, each waiting on the server (below, over a single
    // connection): the restore runs target calls off the async workers.
    for i in 0..700 {
        std::fs::create_dir_all(root.join(format!("_data/scratch/d{i:03}"))).expect("mkdir");
    }

    s.ok(&["init"]);
    settle();
    let first = s.json(&["backup", &url, "--json"]);
    assert_eq!(first["snapshot"]["source"]["kind"], "nfs", "{first}");
    assert_eq!(first["snapshot"]["source"]["uri"], url.as_str());
    assert_eq!(summary_u64(&first, "files"), report.files);
    assert_eq!(summary_u64(&first, "files_read"), report.files);

    // Change detection across a server restart: file ids, ctimes and mtimes are the
    // server's, stable over restarts, so an unchanged export is not read again.
    server.restart();
    let second = s.json(&["backup", &url, "--json"]);
    assert_eq!(summary_u64(&second, "bytes_read"), 0, "{second}");
    assert_eq!(summary_u64(&second, "files_read"), 0, "{second}");
    assert_eq!(summary_u64(&second, "files_unchanged"), report.files);

    // Night 2 on the export: only what changed is read.
    let night2 = generate(&spec.clone().at_night(2), &server.export()).expect("night 2");
    settle();
    let third = s.json(&["backup", &url, "--json"]);
    let read = summary_u64(&third, "bytes_read");
    assert!(
        read > 0 && read <= night2.written_bytes + (64 << 10),
        "night 2 reads only what changed: {read} bytes for {} written",
        night2.written_bytes
    );
    s.ok(&["check", "--read-data"]);

    // To a directory: the same tree, bytes and metadata (owners too: ganesha does not squash
    // root), and the same GNU tar stream.
    let restored = s.path("restored");
    let summary = s.json(&[
        "restore",
        "latest",
        "--target",
        restored.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(
        summary["summary"]["verified_blobs"].as_u64(),
        Some(night2.blobs)
    );
    assert_same_tree(&root, &restored.join(&name));
    assert_eq!(
        gnu_tar_sha256(&server.export(), &name),
        gnu_tar_sha256(&restored, &name)
    );

    // Back onto the export where the registry reads it: refused over the live volume, then
    // wiped and written back through nfs://.
    let reference = copy_tree(&root, &s.path("reference"));
    let refused = s.fails(&["restore", "latest", "--target", &url]);
    assert!(refused.contains("exists"), "{refused}");
    for entry in std::fs::read_dir(&root).expect("read_dir") {
        let path = entry.expect("entry").path();
        match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        }
        .expect("wipe");
    }
    // One connection: every directory's request waits for it.
    let mut one = server.url(&name);
    one.connections = Some(1);
    let back = s.json(&["restore", "latest", "--target", &one.to_string(), "--json"]);
    assert_eq!(
        back["summary"]["verified_blobs"].as_u64(),
        Some(night2.blobs)
    );
    assert_same_tree(&reference, &root);
    let leftovers = stowage_backends::testing::temp_files(&root);
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A symlink where the snapshot has a directory is replaced, and nothing is written
    // through it.
    let outside = s.path("outside");
    std::fs::create_dir_all(outside.join("docker")).expect("mkdir");
    std::fs::write(outside.join("docker/keep"), b"not the snapshot's").expect("write");
    let outside_before = copy_tree(&outside, &s.path("outside-reference"));
    std::fs::remove_dir_all(root.join("_data")).expect("remove _data");
    std::os::unix::fs::symlink(&outside, root.join("_data")).expect("symlink");
    s.ok(&["restore", "latest", "--target", &url, "--overwrite"]);
    assert_same_tree(&outside_before, &outside);
    assert_same_tree(&reference, &root);

    // --delete through nfs:// removes what the snapshot lacks (a tree of a new repository,
    // a file, a symlink out, not followed): the export equals the snapshot again.
    let extra = root.join("_data/docker/registry/v2/repositories/pushed-since/_layers");
    std::fs::create_dir_all(extra.join("sha256/ab")).expect("mkdir");
    std::fs::write(extra.join("sha256/ab/link"), b"sha256:ab").expect("write");
    std::fs::write(root.join("_data/stray"), b"stray").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("_data/escape")).expect("symlink");
    let deleted = s.json(&["restore", "latest", "--target", &url, "--delete", "--json"]);
    assert_eq!(deleted["summary"]["deleted"].as_u64(), Some(3), "{deleted}");
    assert_same_tree(&reference, &root);
    assert_same_tree(&outside_before, &outside);

    // Resumed: what the export holds as the snapshot has it is not written again.
    std::fs::remove_file(root.join("_data/stray")).ok();
    let resumed = s.json(&[
        "restore",
        "latest",
        "--target",
        &url,
        "--skip-existing",
        "--json",
    ]);
    let files = resumed["summary"]["files"].as_u64().expect("files");
    assert_eq!(
        resumed["summary"]["skipped"].as_u64(),
        Some(files),
        "{resumed}"
    );
    assert_same_tree(&reference, &root);
}

#[test]
fn a_repository_on_an_export() {
    let server = Ganesha::start();
    let repo = server.url("backups/dtr").to_string();
    let s = Stowage::at(&repo, Vec::new());
    let spec = VolumeSpec::new(62, 8 << 20);
    let root = generate(&spec, &s.path("volumes")).expect("generate").root;
    let name = dir_name(&root);

    // A repository that is not there yet is a clear error, then init makes the path.
    let missing = s.fails(&["snapshots"]);
    assert!(missing.contains("backups/dtr"), "{missing}");
    s.ok(&["init"]);
    assert!(server.export().join("backups/dtr/config").is_file());
    settle();
    s.ok(&["backup", root.to_str().expect("utf-8")]);
    s.ok(&["check", "--read-data"]);
    let restored = s.path("restored");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        restored.to_str().expect("utf-8"),
    ]);
    assert_same_tree(&root, &restored.join(&name));
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let server = Ganesha::start();
    let s = Stowage::new();
    s.ok(&["init"]);
    let mut url = server.url("");
    drop(server);
    url.nfs_port = Some(free_port());
    url.mount_port = url.nfs_port;
    let err = s.fails(&["backup", &url.to_string()]);
    assert!(
        err.contains("cannot back up") && err.contains("cannot reach the NFS server"),
        "{err}"
    );
    assert!(
        s.ok(&["snapshots"]).lines().all(|l| !l.contains("nfs://")),
        "no snapshot was written"
    );
}
