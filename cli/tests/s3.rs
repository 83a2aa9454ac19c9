//! S3 end to end against a real S3 server (moto on loopback, started per test): a repository
//! in a bucket, a registry in a bucket backed up and restored object for object, offsite
//! copies (idempotent, resumable after a kill), the server stopping mid-backup, bench-store.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_tree, dir_name, settle, signal, Stowage};
use stowage_backends::Store;
use stowage_fixtures::{generate, VolumeSpec};
use stowage_s3::testing::MotoServer;
use stowage_s3::{S3Store, S3Url};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn store(rt: &tokio::runtime::Runtime, server: &MotoServer, location: &str) -> S3Store {
    let url = S3Url::parse(location).expect("s3 url").expect("valid");
    rt.block_on(S3Store::open(url, &server.options()))
        .expect("open store")
}

/// Every object under the store's prefix: key -> bytes.
fn objects(rt: &tokio::runtime::Runtime, store: &S3Store) -> BTreeMap<String, Vec<u8>> {
    rt.block_on(async {
        let mut all = BTreeMap::new();
        for meta in store.list("").await.expect("list") {
            let bytes = store.get(&meta.key).await.expect("get");
            all.insert(meta.key, bytes.to_vec());
        }
        all
    })
}

/// Every file under `root`: relative path -> bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel.to_str().expect("utf-8 path").to_string();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn volume(dir: &Path, seed: u64, size: u64) -> PathBuf {
    generate(&VolumeSpec::new(seed, size), dir)
        .expect("generate")
        .root
}

/// Waits until `store` holds at least one pack (a process writing to it is mid-way).
fn wait_for_a_pack(rt: &tokio::runtime::Runtime, store: &S3Store, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let packs = rt
            .block_on(store.list("data/"))
            .map(|l| l.len())
            .unwrap_or(0);
        if packs > 0 {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the process ended ({status}) before any pack was stored");
        }
        assert!(Instant::now() < deadline, "no pack appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_volume_backs_up_to_a_bucket_and_restores_exactly() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("backups", false));
    let s = Stowage::at("s3://backups/dtr/nightly", server.env());
    let spec = VolumeSpec::new(21, 10 << 20);
    let volumes = s.path("volumes");
    let root = generate(&spec, &volumes).expect("generate").root;
    let name = dir_name(&root);

    s.ok(&["init"]);
    settle();
    s.json(&["backup", root.to_str().expect("utf-8"), "--json"]);
    let night2 = generate(&spec.clone().at_night(2), &volumes).expect("night 2");
    settle();
    let second = s.json(&["backup", root.to_str().expect("utf-8"), "--json"]);
    let read = second["snapshot"]["summary"]["bytes_read"]
        .as_u64()
        .expect("bytes_read");
    assert!(
        read <= night2.written_bytes + (64 << 10),
        "night 2 reads only what changed: {read} bytes for {} written",
        night2.written_bytes
    );
    s.ok(&["check", "--read-data"]);

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
}

#[test]
fn a_registry_in_a_bucket_restores_into_a_fresh_bucket_object_for_object() {
    let rt = runtime();
    let server = MotoServer::start();
    for bucket in ["registry", "restored", "repo"] {
        rt.block_on(server.create_bucket(bucket, false));
    }
    let s = Stowage::at("s3://repo/backups", server.env());
    let spec = VolumeSpec::new(22, 8 << 20);
    let report = generate(&spec, &s.path("volume")).expect("generate");
    // The registry's s3 driver keeps the same layout under its rootdirectory.
    let registry = store(&rt, &server, "s3://registry/prod/dtr");
    let originals = files(&report.root.join("_data"));
    rt.block_on(async {
        for (key, bytes) in &originals {
            registry
                .put(key, bytes.clone().into())
                .await
                .expect("upload");
        }
    });
    assert!(originals
        .keys()
        .any(|k| k.starts_with("docker/registry/v2/blobs/sha256/")));

    s.ok(&["init"]);
    settle();
    let first = s.json(&["backup", "s3://registry/prod/dtr", "--json"]);
    assert_eq!(first["snapshot"]["source"]["uri"], "s3://registry/prod/dtr");
    assert_eq!(
        first["snapshot"]["summary"]["files"].as_u64(),
        Some(originals.len() as u64)
    );
    settle();
    let second = s.json(&["backup", "s3://registry/prod/dtr", "--json"]);
    assert_eq!(
        second["snapshot"]["summary"]["bytes_read"].as_u64(),
        Some(0),
        "an unchanged bucket is not read again"
    );

    let restore = s.json(&[
        "restore",
        "latest",
        "--target",
        "s3://restored/prod/dtr",
        "--json",
    ]);
    assert_eq!(
        restore["summary"]["verified_blobs"].as_u64(),
        Some(report.blobs)
    );
    let restored = store(&rt, &server, "s3://restored/prod/dtr");
    let (before, after) = (objects(&rt, &registry), objects(&rt, &restored));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "same keys"
    );
    assert!(before == after, "same bytes for every key");
    assert!(before == originals);

    let err = s.fails(&["restore", "latest", "--target", "s3://restored/prod/dtr"]);
    assert!(
        err.contains("--overwrite"),
        "restoring over a registry needs --overwrite: {err}"
    );

    // Objects the snapshot lacks (a tag pushed since, a whole repository) go with --delete;
    // those outside the prefix stay.
    let beside = store(&rt, &server, "s3://restored/prod");
    rt.block_on(async {
        let extra = [
            "dtr/docker/registry/v2/repositories/extra/app/_manifests/tags/new/current/link",
            "dtr/docker/registry/v2/repositories/extra/app/_layers/sha256/ab/link",
            "other/keep",
        ];
        for key in extra {
            beside.put(key, b"x".to_vec().into()).await.expect("upload");
        }
    });
    let dry = s.json(&[
        "restore",
        "latest",
        "--target",
        "s3://restored/prod/dtr",
        "--delete",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["summary"]["deleted"].as_u64(), Some(1), "{dry}");
    assert_eq!(objects(&rt, &restored).len(), originals.len() + 2);
    s.ok(&[
        "restore",
        "latest",
        "--target",
        "s3://restored/prod/dtr",
        "--delete",
    ]);
    assert!(
        objects(&rt, &restored) == originals,
        "the bucket equals the snapshot"
    );
    assert!(objects(&rt, &beside).contains_key("other/keep"));

    // The same snapshot restores into a directory volume layout.
    let dir = s.path("as-directory");
    s.ok(&[
        "restore",
        "latest",
        "--target",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(
        files(&dir.join("dtr")) == originals,
        "directory restore has the same files"
    );
}

#[test]
fn copy_to_a_bucket_is_exact_idempotent_and_survives_a_kill() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("offsite", false));
    let local = Stowage::new().with_env(server.env());
    let spec = VolumeSpec::new(23, 8 << 20);
    let volumes = local.path("volumes");
    let root = generate(&spec, &volumes).expect("generate").root;
    let name = dir_name(&root);
    local.ok(&["init"]);
    settle();
    local.ok(&["backup", root.to_str().expect("utf-8")]);
    generate(&spec.clone().at_night(2), &volumes).expect("night 2");
    settle();
    local.ok(&["backup", root.to_str().expect("utf-8")]);

    let first = local.json(&["copy", "--to", "s3://offsite/dtr", "--json"]);
    assert_eq!(first["snapshots_copied"], 2);
    let again = local.json(&["copy", "--to", "s3://offsite/dtr", "--json"]);
    assert_eq!(
        (
            again["snapshots_copied"].as_u64(),
            again["blobs_copied"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(again["snapshots_skipped"], 2);

    let offsite = Stowage::at("s3://offsite/dtr", server.env());
    offsite.ok(&["check", "--read-data"]);
    assert_eq!(
        offsite
            .json(&["snapshots", "--json"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let restored = offsite.path("restored");
    offsite.ok(&[
        "restore",
        "latest",
        "--target",
        restored.to_str().expect("utf-8"),
    ]);
    assert_same_tree(&root, &restored.join(&name));

    // A bigger repository, its copy killed once the first pack landed, then run again.
    let big = Stowage::new().with_env(server.env());
    let big_root = volume(&big.path("volumes"), 24, 96 << 20);
    big.ok(&["init"]);
    big.ok(&["backup", big_root.to_str().expect("utf-8")]);
    let target = store(&rt, &server, "s3://offsite/big");
    let mut child = big
        .command(&["copy", "--to", "s3://offsite/big"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn copy");
    wait_for_a_pack(&rt, &target, &mut child);
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the copy was killed midway");
    let big_offsite = Stowage::at("s3://offsite/big", server.env());
    assert_eq!(
        big_offsite
            .json(&["snapshots", "--json"])
            .as_array()
            .map(Vec::len),
        Some(0),
        "a killed copy records no snapshot"
    );
    let resumed = big.json(&["copy", "--to", "s3://offsite/big", "--json"]);
    assert_eq!(resumed["snapshots_copied"], 1);
    big_offsite.ok(&["check", "--read-data"]);
    let big_restored = big_offsite.path("restored");
    big_offsite.ok(&[
        "restore",
        "latest",
        "--target",
        big_restored.to_str().expect("utf-8"),
    ]);
    let big_name = big_root.file_name().expect("name");
    assert_same_tree(&big_root, &big_restored.join(big_name));
}

#[test]
fn the_server_stopping_mid_backup_fails_clearly_and_costs_nothing() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("fragile", false));
    let mut env = server.env();
    env.push(("STOWAGE_S3_TIMEOUT", "2".into()));
    env.push(("STOWAGE_S3_RETRIES", "1".into()));
    let s = Stowage::at("s3://fragile/repo", env);
    let root = volume(&s.path("volumes"), 25, 96 << 20);
    let name = dir_name(&root);
    s.ok(&["init"]);

    let mut child = s
        .command(&["backup", root.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    let repo = store(&rt, &server, "s3://fragile/repo");
    wait_for_a_pack(&rt, &repo, &mut child);
    signal(server.pid(), libc::SIGSTOP);
    let out = child.wait_with_output();
    signal(server.pid(), libc::SIGCONT);
    let out = out.expect("backup ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the backup must fail when the server stops"
    );
    assert!(
        stderr.contains("error:") && stderr.contains("s3://fragile/repo"),
        "a clear error naming the repository: {stderr}"
    );

    assert_eq!(
        s.json(&["snapshots", "--json"]).as_array().map(Vec::len),
        Some(0)
    );
    s.ok(&["check"]);
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
fn unreachable_and_missing_buckets_are_clear_errors() {
    let server = MotoServer::start();
    let s = Stowage::at("s3://no-such-bucket/repo", server.env());
    let err = s.fails(&["init"]);
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    let mut env = server.env();
    drop(server);
    env.push(("STOWAGE_S3_RETRIES", "0".into()));
    let s = Stowage::at("s3://gone/repo", env);
    let err = s.fails(&["snapshots"]);
    assert!(err.contains("s3://gone/repo"), "{err}");
}

#[test]
fn bench_compares_every_store_operation_and_pipeline() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("bench", false));
    let s = Stowage::new().with_env(server.env());
    let dir = s.path("dir-store");
    let volume = generate(&VolumeSpec::small(5), &s.path("volume")).expect("generate");
    let chart = s.path("chart.svg");
    let dir_name = dir.to_str().expect("utf-8");
    let report = s.json(&[
        "bench",
        "memory://",
        dir_name,
        "s3://bench/x",
        "--sizes",
        "4K,1M",
        "--bytes",
        "2M",
        "--volume",
        volume.root.to_str().expect("utf-8"),
        "--svg",
        chart.to_str().expect("utf-8"),
        "--json",
    ]);
    let rows = report["stores"].as_array().expect("store rows");
    let pipelines = report["pipelines"].as_array().expect("pipeline rows");
    let stores = ["memory", dir_name, "s3://bench/x"];
    for store in stores {
        for op in ["put", "get", "list", "delete"] {
            for size in [4096u64, 1 << 20] {
                let row = rows.iter().find(|r| {
                    r["store"] == store && r["op"] == op && r["object_size"].as_u64() == Some(size)
                });
                let row = row.unwrap_or_else(|| panic!("no row for {store} {op} {size}"));
                assert!(row["requests"].as_u64().unwrap_or(0) > 0);
                assert!(row["seconds"].as_f64().unwrap_or(0.0) > 0.0);
            }
        }
        for op in ["backup", "restore"] {
            let row = pipelines
                .iter()
                .find(|r| r["store"] == store && r["op"] == op)
                .unwrap_or_else(|| panic!("no {op} row for {store}"));
            assert_eq!(row["bytes"].as_u64(), Some(volume.bytes), "{row}");
            assert_eq!(row["files"].as_u64(), Some(volume.files), "{row}");
            assert!(row["mb_per_s"].as_f64().unwrap_or(0.0) > 0.0);
        }
    }
    assert_eq!(rows.len(), 3 * 4 * 2);
    assert_eq!(pipelines.len(), 3 * 2);

    // The chart: one bar per store for put and get of 1 MiB, backup and restore.
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<title>").count(), 3 * 4, "{svg}");
    for store in stores {
        assert!(svg.contains(store), "{store} missing from the chart");
    }

    let left = rt
        .block_on(store(&rt, &server, "s3://bench/x").list(""))
        .expect("list");
    assert!(left.is_empty(), "bench objects are deleted: {left:?}");
    assert!(
        files(&dir).is_empty(),
        "nothing left in the directory store"
    );
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("the store's directory")
        .collect();
    assert!(
        entries.is_empty(),
        "not even empty directories: {entries:?}"
    );
}

#[test]
fn under_object_lock_every_object_a_snapshot_needs_stays_retained() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("vault", true));
    let with_lock = |lock: &str| {
        let mut env = server.env();
        env.push(("STOWAGE_S3_LOCK", lock.to_string()));
        env.push(("STOWAGE_S3_STORAGE_CLASS", "STANDARD_IA".to_string()));
        env
    };
    let night1 = Stowage::at("s3://vault/dtr", with_lock("governance:1d"));
    let root = volume(&night1.path("volumes"), 26, 6 << 20);
    night1.ok(&["init"]);
    settle();
    night1.ok(&["backup", root.to_str().expect("utf-8")]);
    let repo = store(&rt, &server, "s3://vault/dtr");
    let retained_days = |key: &str| -> f64 {
        let info = rt.block_on(repo.object_info(key)).expect("object info");
        assert_eq!(
            info.lock_mode.as_deref(),
            Some("GOVERNANCE"),
            "{key} is locked"
        );
        let until = info.retain_until.expect("retained");
        let left = until
            .duration_since(std::time::SystemTime::now())
            .expect("in the future");
        left.as_secs_f64() / 86_400.0
    };
    let keys: Vec<String> = rt
        .block_on(repo.list(""))
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    let first_snapshot = keys
        .iter()
        .find(|k| k.starts_with("snapshots/"))
        .expect("a snapshot")
        .clone();
    for key in &keys {
        let days = retained_days(key);
        assert!((0.9..2.1).contains(&days), "{key}: {days} days");
        let class = rt
            .block_on(repo.object_info(key))
            .expect("info")
            .storage_class;
        let expected = key.starts_with("data/").then_some("STANDARD_IA");
        assert_eq!(class.as_deref(), expected, "{key}: only packs change class");
    }

    // The next night runs with a longer period: its snapshot reuses every pack of the first,
    // so those (and the config, keys and index files) are extended before it is written.
    settle();
    let night2 = Stowage::at("s3://vault/dtr", with_lock("governance:4d"));
    let second = night2.json(&["backup", root.to_str().expect("utf-8"), "--json"]);
    assert_eq!(
        second["snapshot"]["summary"]["new_packs"], 0,
        "nothing new to store"
    );
    for key in &keys {
        let days = retained_days(key);
        if *key == first_snapshot {
            assert!(
                days < 2.1,
                "the old snapshot object itself is not needed: {days} days"
            );
        } else {
            assert!(
                days >= 3.99,
                "{key} must be retained for the new period: {days} days"
            );
        }
    }
    night2.ok(&["check", "--read-data"]);

    // A third night with the same period finds everything retained long enough already:
    // nothing is extended again (one retention request per object per quarter period).
    let until = |key: &String| {
        rt.block_on(repo.object_info(key))
            .expect("info")
            .retain_until
    };
    let before: Vec<_> = keys.iter().map(until).collect();
    settle();
    night2.ok(&["backup", root.to_str().expect("utf-8")]);
    let after: Vec<_> = keys.iter().map(until).collect();
    assert_eq!(before, after, "objects retained long enough are left alone");

    // Benchmark objects could never be deleted from a retaining store.
    let err = night2.fails(&["bench-store", "s3://vault/bench"]);
    assert!(err.contains("retained"), "{err}");

    // Nor can prune delete anything there: it says so and changes nothing.
    let objects_before = objects(&rt, &repo).len();
    let err = night2.fails(&["prune"]);
    assert!(
        err.contains("Object Lock") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(objects(&rt, &repo).len(), objects_before);
    night2.ok(&["prune", "--dry-run"]);
}

#[test]
fn credentials_come_from_the_aws_profile_chain() {
    let rt = runtime();
    let server = MotoServer::start();
    rt.block_on(server.create_bucket("profiled", false));
    let s = Stowage::at("s3://profiled/repo", Vec::new());
    let credentials = s.path("aws-credentials");
    std::fs::write(
        &credentials,
        // Only the named profile has keys (moto accepts any): if AWS_PROFILE were ignored
        // there would be none, and `init` would fail.
        "[backup]\naws_access_key_id = from-profile\naws_secret_access_key = secret\n",
    )
    .expect("write credentials file");
    let command = |args: &[&str], profile: Option<&str>| {
        let mut command = s.command(args);
        command
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", s.path("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN");
        match profile {
            Some(p) => command.env("AWS_PROFILE", p),
            None => command.env_remove("AWS_PROFILE"),
        };
        command.output().expect("run stowage")
    };
    let out = command(&["init"], Some("backup"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No key anywhere in the chain: a clear error, not a hang.
    std::fs::write(&credentials, "").expect("empty credentials file");
    let out = command(&["snapshots"], Some("backup"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials"), "{stderr}");
}
