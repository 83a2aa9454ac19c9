//! Round trips through the real registry: the CNCF distribution registry (Debian's
//! `docker-registry`) and `skopeo` on 127.0.0.1. Images are built here as OCI layouts and
//! pushed; tags are moved and deleted and the registry garbage-collects; its storage is
//! backed up, wiped and restored, and the registry, started on the restored storage, must
//! serve every tag with the same digests (skopeo checks every blob it pulls). A byte flipped
//! in one restored blob must make the pull fail: the test can fail.
//!
//! Both storage drivers: the filesystem (a DTR volume) and S3 (a bucket of the S3 test
//! server). `scripts/setup` installs the registry and skopeo.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stowage_backends::Store;
use stowage_s3::testing::{free_port, MotoServer, ACCESS_KEY, SECRET_KEY};
use stowage_s3::{S3Store, S3Url};

use common::Stowage;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run scripts/setup (Debian packages docker-registry, skopeo)"
    );
    name.to_string()
}

/// An OCI image layout directory with images built from generated files.
struct Layout {
    dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).expect("blob");
        (digest, bytes.len())
    }

    /// A gzip layer holding `files` (name, content); returns its descriptor and diff id.
    fn layer(&self, files: &[(&str, Vec<u8>)]) -> (Value, String) {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            tar.append_data(&mut header, name, content.as_slice())
                .expect("tar entry");
        }
        let raw = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let (digest, size) = self.blob(&gz);
        let descriptor = json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        });
        (descriptor, sha256(&raw))
    }

    /// An image of `layers` for `arch`; returns the manifest's descriptor.
    fn image(&self, layers: &[(Value, String)], arch: &str) -> Value {
        let config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.1).collect::<Vec<_>>()},
        });
        let (config_digest, config_size) = self.blob(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|l| &l.0).collect::<Vec<_>>(),
        });
        let (digest, size) = self.blob(manifest.to_string().as_bytes());
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        })
    }

    /// An image index of `manifests`; returns its descriptor.
    fn index(&self, manifests: Vec<Value>) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let (digest, size) = self.blob(index.to_string().as_bytes());
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size})
    }

    /// Names `descriptor` `name` in the layout's index.json.
    fn name(&mut self, name: &str, mut descriptor: Value) {
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.refs.push(descriptor);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
    }
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "registry", "layer", "blob", "digest", "tag", "manifest", "nightly",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out
}

/// A registry process on a free port, serving the storage of `config`.
struct Registry {
    child: Child,
    host: String,
    config: PathBuf,
}

impl Registry {
    fn start(config_body: &str, dir: &Path) -> Registry {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.join(format!("registry-{port}.yml"));
        std::fs::write(
            &config,
            format!("{config_body}\nhttp:\n  addr: {host}\nlog:\n  level: warn\n"),
        )
        .expect("registry config");
        Self::serve(config, host)
    }

    fn serve(config: PathBuf, host: String) -> Registry {
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&config)
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            config,
        }
    }

    fn stop(mut self) -> (PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.config.clone(), self.host.clone())
    }

    fn garbage_collect(config: &Path) {
        let out = Command::new(tool("docker-registry"))
            .arg("garbage-collect")
            .arg(config)
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("garbage-collect");
        assert!(
            out.status.success(),
            "garbage-collect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn skopeo(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("skopeo"))
            .args(args)
            .output()
            .expect("run skopeo")
    }

    fn push(&self, layout: &Path, name: &str, to: &str) {
        let src = format!("oci:{}:{name}", layout.display());
        let dst = format!("docker://{}/{to}", self.host);
        let out = self.skopeo(&["copy", "--all", "--dest-tls-verify=false", &src, &dst]);
        assert!(
            out.status.success(),
            "push {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The digest of the manifest or index a tag names, from the raw bytes served.
    fn digest(&self, image: &str) -> Option<String> {
        let reference = format!("docker://{}/{image}", self.host);
        let out = self.skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
        out.status.success().then(|| sha256(&out.stdout))
    }

    /// Pulls every platform of `image` (skopeo verifies every blob against its digest).
    fn pull(&self, image: &str, into: &Path) -> Result<(), String> {
        std::fs::create_dir_all(into).expect("pull dir");
        let src = format!("docker://{}/{image}", self.host);
        let dst = format!("oci:{}:pulled", into.display());
        let out = self.skopeo(&["copy", "--all", "--src-tls-verify=false", &src, &dst]);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    fn delete(&self, image: &str) {
        let reference = format!("docker://{}/{image}", self.host);
        let out = self.skopeo(&["delete", "--tls-verify=false", &reference]);
        assert!(
            out.status.success(),
            "delete {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes the test images, moves and deletes tags; returns the digest each remaining tag
/// must have, and the layer blobs of `team/app:v2` (to damage one later).
fn populate(registry: &Registry, work: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    let mut layout = Layout::new(work.join("images"));
    let base = layout.layer(&[("etc/os-release", text(1, 20_000))]);
    let app1 = layout.layer(&[("app/main.py", text(2, 300_000))]);
    let app2 = layout.layer(&[
        ("app/main.py", text(3, 300_000)),
        ("app/new.txt", text(4, 5_000)),
    ]);
    let tool_layer = layout.layer(&[("usr/bin/tool", text(5, 150_000))]);
    let v1 = layout.image(&[base.clone(), app1], "amd64");
    let v2 = layout.image(&[base.clone(), app2.clone()], "amd64");
    let arm = layout.layer(&[("db/arm64", text(6, 80_000))]);
    let amd = layout.layer(&[("db/amd64", text(7, 80_000))]);
    let db_amd = layout.image(&[base.clone(), amd], "amd64");
    let db_arm = layout.image(&[base, arm], "arm64");
    let multi = layout.index(vec![db_amd, db_arm]);
    let tool_image = layout.image(&[tool_layer], "amd64");
    layout.name("v1", v1);
    layout.name("v2", v2);
    layout.name("multi", multi);
    layout.name("tool", tool_image);

    registry.push(&layout.dir, "v1", "team/app:v1");
    registry.push(&layout.dir, "v1", "team/app:latest");
    registry.push(&layout.dir, "v2", "team/app:v2");
    registry.push(&layout.dir, "multi", "team/db:1.0");
    registry.push(&layout.dir, "tool", "library/tool:t1");
    // Move `latest` to v2; delete the only tag of library/tool (its manifest goes).
    registry.push(&layout.dir, "v2", "team/app:latest");
    registry.delete("library/tool:t1");

    let mut expected = BTreeMap::new();
    for image in [
        "team/app:v1",
        "team/app:v2",
        "team/app:latest",
        "team/db:1.0",
    ] {
        let digest = registry.digest(image).expect("tag is served");
        expected.insert(image.to_string(), digest);
    }
    assert_eq!(expected["team/app:latest"], expected["team/app:v2"]);
    assert!(registry.digest("library/tool:t1").is_none());
    let v2_layers = vec![app2.0["digest"].as_str().expect("digest").to_string()];
    (expected, v2_layers)
}

/// Every tag is served with its digest and pulls completely.
fn assert_serves(registry: &Registry, expected: &BTreeMap<String, String>, work: &Path) {
    for (image, digest) in expected {
        assert_eq!(
            registry.digest(image).as_deref(),
            Some(digest.as_str()),
            "{image} after restore"
        );
        let into = work.join(format!("pull-{}", image.replace(['/', ':'], "-")));
        registry
            .pull(image, &into)
            .unwrap_or_else(|e| panic!("pull {image} after restore: {e}"));
    }
    assert!(registry.digest("library/tool:t1").is_none());
}

#[test]
fn a_restored_filesystem_registry_serves_every_tag_again() {
    let s = Stowage::new();
    let work = s.path("work");
    let volume = s.path("volumes").join("dtr-registry-0123456789ab");
    let storage = volume.join("_data");
    std::fs::create_dir_all(&storage).expect("storage dir");
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true",
        storage.display()
    );
    let registry = Registry::start(&config, s.dir.path());
    let (expected, v2_layers) = populate(&registry, &work);
    let (config_path, host) = registry.stop();
    Registry::garbage_collect(&config_path);

    s.ok(&["init"]);
    s.ok(&["backup", volume.to_str().expect("utf-8")]);
    std::fs::remove_dir_all(&volume).expect("wipe the registry storage");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        volume.parent().and_then(Path::to_str).expect("utf-8"),
    ]);
    let registry = Registry::serve(config_path.clone(), host.clone());
    assert_serves(&registry, &expected, &work.join("after-restore"));
    let (config_path, host) = registry.stop();

    // A partial restore of one tag: a registry on it serves that tag and nothing else.
    let partial = s.path("partial");
    s.ok(&[
        "restore",
        "latest",
        "--include",
        "team/app:v2",
        "--target",
        partial.to_str().expect("utf-8"),
    ]);
    let partial_config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}",
        partial.join("dtr-registry-0123456789ab/_data").display()
    );
    let only_v2 = Registry::start(&partial_config, s.dir.path());
    let mut wanted = BTreeMap::new();
    wanted.insert("team/app:v2".to_string(), expected["team/app:v2"].clone());
    assert_serves(&only_v2, &wanted, &work.join("partial"));
    for other in ["team/app:v1", "team/db:1.0"] {
        assert!(only_v2.digest(other).is_none(), "{other} was not selected");
    }
    drop(only_v2);

    // One byte flipped in a restored layer: the registry serves it, skopeo refuses it.
    let hex = v2_layers[0].trim_start_matches("sha256:");
    let blob = storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&blob).expect("restored layer");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&blob, bytes).expect("damage");
    let registry = Registry::serve(config_path, host);
    let err = registry
        .pull("team/app:v2", &work.join("pull-damaged"))
        .expect_err("a damaged layer must not pull");
    assert!(err.contains("digest") || err.contains("Digest"), "{err}");
}

#[test]
fn a_restored_s3_registry_serves_every_tag_again() {
    let s3 = MotoServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(s3.create_bucket("registry", false));
    let s = Stowage::new().with_env(s3.env());
    let work = s.path("work");
    let config = format!(
        "version: 0.1\nstorage:\n  s3:\n    accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    \
         region: us-east-1\n    regionendpoint: {}\n    bucket: registry\n    secure: false\n    \
         v4auth: true\n    rootdirectory: /dtr\n  redirect:\n    disable: true\n  delete:\n    \
         enabled: true",
        s3.endpoint()
    );
    let registry = Registry::start(&config, s.dir.path());
    let (expected, v2_layers) = populate(&registry, &work);
    let (config_path, host) = registry.stop();
    Registry::garbage_collect(&config_path);

    let bucket = rt
        .block_on(S3Store::open(
            S3Url::parse("s3://registry/dtr")
                .expect("an s3 url")
                .expect("valid"),
            &s3.options(),
        ))
        .expect("bucket");
    let before = rt.block_on(bucket.list("")).expect("list");
    assert!(
        before.len() > 10,
        "the registry wrote {} objects",
        before.len()
    );

    s.ok(&["init"]);
    s.ok(&["backup", "s3://registry/dtr"]);
    for object in &before {
        rt.block_on(bucket.delete(&object.key)).expect("wipe");
    }
    assert!(rt.block_on(bucket.list("")).expect("list").is_empty());
    s.ok(&["restore", "latest", "--target", "s3://registry/dtr"]);
    let after = rt.block_on(bucket.list("")).expect("list");
    assert_eq!(after.len(), before.len(), "object for object");
    let registry = Registry::serve(config_path.clone(), host.clone());
    assert_serves(&registry, &expected, &work.join("after-restore"));
    let (config_path, host) = registry.stop();

    let hex = v2_layers[0].trim_start_matches("sha256:");
    let key = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let mut bytes = rt
        .block_on(bucket.get(&key))
        .expect("restored layer")
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    rt.block_on(bucket.delete(&key)).expect("delete");
    rt.block_on(bucket.put(&key, bytes.into())).expect("damage");
    let registry = Registry::serve(config_path, host);
    let err = registry
        .pull("team/app:v2", &work.join("pull-damaged"))
        .expect_err("a damaged layer must not pull");
    assert!(err.contains("digest") || err.contains("Digest"), "{err}");
}
