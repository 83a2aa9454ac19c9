//! Gzip layers kept as their plaintext plus a recipe (FORMAT.md, "Gzip content"), end to
//! end through the real binary, with layers written by real encoders: GNU gzip, zlib (through
//! Python's zlib module), Go's compress/gzip (containerd, the docker CLI family) and
//! klauspost/pgzip (skopeo, podman), the Go ones built from `fixtures/go` with Debian's
//! golang-go and golang-github-klauspost-pgzip-dev (installed by scripts/setup).

// Test helpers unwrap: a panic is the test's failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{assert_same_tree, summary_u64, Stowage};
use sha2::{Digest, Sha256};
use stowage_fixtures::{generate, VolumeSpec};

/// Text-like bytes, as in a layer's config files and scripts: words with a seeded
/// sprinkle of other bytes.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "usr",
        "lib",
        "share",
        "doc",
        "copyright",
        "python3",
        "site-packages",
        "__init__",
        "import",
        "return",
        "self",
        "def",
        "class",
        "None",
        "True",
        "{\"name\":",
        "\n",
        "    ",
        "0.1.0",
        "x86_64-linux-gnu",
        "README",
        "LICENSE",
        "=",
        ";",
        "#!/bin/sh",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x.is_multiple_of(5) {
            b' '
        } else {
            (x >> 40) as u8
        });
    }
    out.truncate(len);
    out
}

/// A layer's tar (GNU tar, reproducible) on night 1, and on night 2 with three files
/// changed: the first, middle and last third of the layer each get one change.
fn layer_tars(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let root = dir.join("layer");
    for i in 0..48u64 {
        let sub = root.join(format!("app/part{}", i % 6));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("file{i:02}.py")), text(200_000, i)).unwrap();
    }
    let tar = || {
        let out = Command::new("tar")
            .current_dir(dir)
            .args([
                "--sort=name",
                "--mtime=@1700000000",
                "--owner=0",
                "--group=0",
            ])
            .args(["--numeric-owner", "-cf", "-", "layer"])
            .output()
            .expect("GNU tar runs");
        assert!(out.status.success());
        out.stdout
    };
    let night1 = tar();
    for (part, file) in [(0, 6), (3, 27), (5, 47)] {
        let path = root.join(format!("app/part{part}/file{file:02}.py"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100_000..100_400].copy_from_slice(&text(400, 1000 + file));
        std::fs::write(&path, bytes).unwrap();
    }
    (night1, tar())
}

/// fixtures/go/gzipper (Go's compress/gzip and klauspost/pgzip), built once per test run.
fn gzipper() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gzipper");
        let bin = dir.join("gzipper");
        let status = Command::new("go")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/go/gzipper"))
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            // Debian's packaged Go libraries, no module download.
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.join("cache"))
            .status()
            .expect("go is installed (scripts/setup installs golang-go)");
        assert!(status.success(), "go build fixtures/go/gzipper");
        bin
    })
}

/// `input` compressed by the named encoder.
fn compress(encoder: &str, input: &[u8]) -> Vec<u8> {
    const ZLIB: &str = "import sys, zlib\n\
        c = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)\n\
        d = sys.stdin.buffer.read()\n\
        sys.stdout.buffer.write(c.compress(d) + c.flush())";
    let mut command = match encoder {
        "gzip -6" | "gzip -9" => {
            let mut c = Command::new("gzip");
            c.args([&encoder[5..], "-n", "-c"]);
            c
        }
        "zlib 6" => {
            let mut c = Command::new("python3");
            c.args(["-c", &ZLIB.replace("LEVEL", "6")]);
            c
        }
        "go" | "pgzip" => {
            let mut c = Command::new(gzipper());
            c.arg(encoder);
            c
        }
        other => panic!("unknown encoder {other}"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{encoder} runs: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{encoder} failed");
    out.stdout
}

/// Puts `blob` into the registry volume under its sha256, as the registry stores layers.
fn put_blob(volume: &Path, blob: &[u8]) {
    let digest = hex::encode(Sha256::digest(blob));
    let dir = volume.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{digest}",
        &digest[..2]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), blob).unwrap();
}

const SMALL_CHUNKS: [&str; 6] = [
    "--chunk-min",
    "16384",
    "--chunk-avg",
    "65536",
    "--chunk-max",
    "262144",
];

fn backup(s: &Stowage, volume: &Path, extra: &[&str]) -> serde_json::Value {
    let path = volume.to_str().unwrap();
    s.json(&[&["backup", "--json", path][..], extra].concat())
}

/// Restores the latest snapshot and insists it is `volume`, every blob checked.
fn assert_restores(s: &Stowage, volume: &Path, blobs: u64) {
    let target = s.path(&format!("restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    let out = s.json(&[
        "restore",
        "latest",
        "--json",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out["summary"]["verified_blobs"], blobs, "{out}");
    assert_same_tree(volume, &target.join(volume.file_name().unwrap()));
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn rebuilt_layers_store_a_small_part_of_the_raw_path_and_restore_exactly() {
    let work = tempfile::tempdir().unwrap();
    let (night1, night2) = layer_tars(work.path());
    for encoder in ["gzip -6", "zlib 6", "go"] {
        let (layer1, layer2) = (compress(encoder, &night1), compress(encoder, &night2));
        let volume = work
            .path()
            .join(format!("dtr-registry-{}", encoder.replace(' ', "")));
        put_blob(&volume, &layer1);

        let gz = Stowage::new();
        gz.ok(&[&["init", "--gzip"][..], &SMALL_CHUNKS].concat());
        let raw = Stowage::new();
        raw.ok(&[&["init"][..], &SMALL_CHUNKS].concat());
        let first = backup(&gz, &volume, &[]);
        assert_eq!(summary_u64(&first, "gzip_layers"), 1, "{encoder}: {first}");
        backup(&raw, &volume, &[]);

        put_blob(&volume, &layer2);
        let gz2 = backup(&gz, &volume, &[]);
        let raw2 = backup(&raw, &volume, &[]);
        assert_eq!(summary_u64(&gz2, "gzip_layers"), 1, "{encoder}: {gz2}");
        assert_eq!(summary_u64(&raw2, "gzip_layers"), 0);
        let (kept, raw_kept) = (
            summary_u64(&gz2, "stored_bytes"),
            summary_u64(&raw2, "stored_bytes"),
        );
        // A tenth, with room: what night 2 stores varies from run to run on the same layers
        // (7-12% for Go's encoder, 2026-12-08; the recipe's corrections differ, see
        // issue 19), so the bound is a seventh.
        assert!(
            kept * 7 <= raw_kept,
            "{encoder}: night 2 stored {kept} bytes as gzip content, {raw_kept} raw (layer {} bytes)",
            layer2.len()
        );
        assert_restores(&gz, &volume, 2);

        // Told so for one backup, a gzip repository stores a layer as it is.
        put_blob(&volume, &compress(encoder, &night1[..night1.len() / 2]));
        let as_is = backup(&gz, &volume, &["--no-gzip"]);
        assert_eq!(summary_u64(&as_is, "gzip_layers"), 0);
        assert_eq!(summary_u64(&as_is, "files_read"), 1);
        assert_restores(&gz, &volume, 3);
    }
}

/// The largest gzip blob of a volume, decompressed.
fn largest_layer_tar(volume: &Path) -> Vec<u8> {
    let files = common::walk_files(volume);
    let layer = files
        .iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| b.starts_with(&[0x1f, 0x8b])))
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .expect("a gzip layer");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(layer).unwrap()),
        &mut tar,
    )
    .unwrap();
    tar
}

#[test]
fn layers_that_cannot_be_recreated_are_stored_as_they_are_and_counted() {
    let work = tempfile::tempdir().unwrap();
    // stowage-fixtures writes its layers with flate2 on zlib-rs, which chooses its matches
    // in a way preflate-rs 0.7.6 finds no parameters for: nothing of them is re-created.
    let report = generate(&VolumeSpec::small(31), work.path()).expect("generate a volume");
    let s = Stowage::new();
    s.ok(&["init", "--gzip"]);
    let out = backup(&s, &report.root, &[]);
    assert!(summary_u64(&out, "gzip_fallbacks") >= 1, "{out}");
    assert_restores(&s, &report.root, report.blobs);

    // The same layer's tar by pgzip (skopeo), which preflate-rs 0.7.6 rejects on this data
    // ("invalid Huffman code lengths": a valid but rare tree shape), and by gzip -9, which it
    // follows; and a stream that stops short of its end (the rest of the file is not
    // deflate), re-created up to there and the rest kept as it is.
    let tar = largest_layer_tar(&report.root);
    let volume = work.path().join("dtr-registry-encoders");
    put_blob(&volume, &compress("pgzip", &tar));
    put_blob(&volume, &compress("gzip -9", &tar));
    let (night1, _) = layer_tars(work.path());
    let mut cut = compress("gzip -6", &night1);
    cut.truncate(cut.len() * 2 / 3);
    cut.extend_from_slice(&text(300_000, 77));
    put_blob(&volume, &cut);
    let run = s.run(&["backup", "--json", volume.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for (field, count) in [
        ("gzip_fallbacks", 1),
        ("gzip_layers", 1),
        ("gzip_partial", 1),
    ] {
        assert_eq!(summary_u64(&out, field), count, "{field}: {out}");
    }
    let warnings = String::from_utf8_lossy(&run.stderr);
    assert!(
        warnings.contains("the rest is stored as it is"),
        "the partial layer is named: {warnings}"
    );
    assert_restores(&s, &volume, 3);
}

#[test]
fn a_fast_first_backup_is_optimized_later_and_nights_after_build_on_it() {
    let work = tempfile::tempdir().unwrap();
    let (night1, night2) = layer_tars(work.path());
    let (layer1, layer2) = (compress("gzip -6", &night1), compress("gzip -6", &night2));
    let volume = work.path().join("dtr-registry-optimize");
    put_blob(&volume, &layer1);
    let s = Stowage::new();
    s.ok(&[&["init", "--gzip"][..], &SMALL_CHUNKS].concat());

    // The first backup stores the layer as it is (fast); optimize re-reads it from the
    // repository and keeps it as gzip content in a new snapshot of the same files.
    let first = backup(&s, &volume, &["--no-gzip"]);
    assert_eq!(summary_u64(&first, "gzip_layers"), 0);
    let optimized = s.json(&["optimize", "--json"]);
    assert_eq!(summary_u64(&optimized, "gzip_layers"), 1, "{optimized}");
    assert_eq!(
        summary_u64(&optimized, "files_read"),
        1,
        "only the layer is read again"
    );
    assert_eq!(optimized["snapshot"]["source"], first["snapshot"]["source"]);
    assert_eq!(optimized["snapshot"]["tags"][0], "optimized");
    assert_restores(&s, &volume, 1);

    // The next night takes the optimized layer from its parent and stores only what changed
    // in the new one.
    put_blob(&volume, &layer2);
    let next = backup(&s, &volume, &[]);
    assert_eq!(summary_u64(&next, "files_read"), 1, "{next}");
    assert_eq!(summary_u64(&next, "gzip_layers"), 1);
    let stored = summary_u64(&next, "stored_bytes");
    assert!(
        stored * 10 <= layer2.len() as u64,
        "night 2 stored {stored} bytes for a {}-byte layer",
        layer2.len()
    );
    assert_restores(&s, &volume, 2);
}

/// A layer of more than 4 GiB of plaintext (preflate-rs keeps positions in an i32): text
/// around 4.3 GiB of zeros, so the gzip file stays small. The first 2 GiB are re-created,
/// the rest is stored as it is. Opt-in (minutes):
/// `cargo test --release -p stowage-cli --test gzip -- --ignored`; result in BENCHMARKS.md.
#[test]
#[ignore]
fn a_layer_of_more_than_4_gib_of_plaintext_restores_exactly() {
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("dtr-registry-huge");
    let mut gzip = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gzip.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Text, 4.3 GiB of zeros, text.
        stdin.write_all(&text(1 << 20, 1))?;
        let zeros = vec![0u8; 64 << 20];
        for _ in 0..68 {
            stdin.write_all(&zeros)?;
        }
        stdin.write_all(&text(1 << 20, 2))
    });
    let out = gzip.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    put_blob(&volume, &out.stdout);

    let s = Stowage::new();
    s.ok(&["init", "--gzip"]);
    let run = s.run(&["backup", "--json", volume.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let backed_up: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let counted =
        ["gzip_layers", "gzip_partial", "gzip_fallbacks"].map(|f| summary_u64(&backed_up, f));
    assert_eq!(counted, [0, 1, 0], "{backed_up}");
    let warning = String::from_utf8_lossy(&run.stderr);
    assert!(
        warning.contains("31 bits"),
        "re-created up to 2 GiB: {warning}"
    );
    eprintln!(
        "4 GiB layer ({} bytes of gzip): {backed_up}",
        out.stdout.len()
    );
    assert_restores(&s, &volume, 1);
}

#[test]
fn gzip_repositories_get_smaller_chunks_unless_told_otherwise() {
    let chunker = |args: &[&str]| {
        let s = Stowage::new();
        s.ok(&[&["init"][..], args].concat());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(Path::new(&s.repo).join("config")).unwrap())
                .unwrap();
        (
            config["chunker"]["avg"].as_u64().unwrap(),
            config["gzip"].clone(),
        )
    };
    assert_eq!(chunker(&[]), (1 << 20, serde_json::Value::Null));
    assert_eq!(
        chunker(&["--gzip"]),
        (256 << 10, serde_json::Value::Bool(true))
    );
    assert_eq!(chunker(&["--gzip", "--chunk-avg", "131072"]).0, 128 << 10);
}
