//! Writes the seed corpora, `corpus/<target>/seed-*`: real objects made by the engine's
//! encoders, tars made by GNU tar, gzip recipes of files made by GNU gzip, and NFS replies
//! as a server sends them. Every seed is checked to decode (or, where it is meant to, to be
//! refused) before it is written.
//!
//! `cargo run --release --example seeds [corpus dir]` (from fuzz/; scripts/fuzz --seeds).
//! Needs GNU tar and gzip on PATH.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use stowage_engine::format::chunker::ChunkerParams;
use stowage_engine::format::compress::{compress, Compression};
use stowage_engine::format::config::Config;
use stowage_engine::format::crypto::{KeyFile, Keys, RawKeys};
use stowage_engine::format::id::Id;
use stowage_engine::format::index_file::{encode_entries, encode_index_file};
use stowage_engine::format::pack::{BlobKind, PackEntry};
use stowage_engine::format::snapshot::{Snapshot, SourceRef, Summary, TarLayout};
use stowage_engine::format::tree::{Content, GzipContent, InlineBytes, Name, Node, NodeKind, Tree};
use stowage_engine::gzip::{header_len, split, Recipe};

struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    [&[mode][..], bytes].concat()
}

fn id(n: u8) -> Id {
    Id::hash_of(&[n])
}

fn time(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos).single().expect("a time")
}

fn entries(n: usize, base: u32) -> Vec<PackEntry> {
    (0..n)
        .map(|i| PackEntry {
            kind: if i % 3 == 2 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            compression: if i % 2 == 1 {
                Compression::Zstd
            } else {
                Compression::None
            },
            id: id(i as u8),
            offset: base * i as u32,
            length: base,
            raw_length: base * 2 - 28,
        })
        .collect()
}

fn packs(c: &Corpus) {
    let keys = Keys::random();
    for (name, list) in [
        ("one", entries(1, 100)),
        ("three", entries(3, 64)),
        ("many", entries(40, 50)),
    ] {
        let table = encode_entries(&list);
        c.put(
            "pack_header",
            &format!("plain-{name}"),
            &with_mode(0, &table),
        );
        let blobs = list.iter().map(|e| e.offset + e.length).max().unwrap_or(0) as u16;
        let sealed_mode = [&[1u8][..], &blobs.to_le_bytes(), &[0], &table].concat();
        c.put("pack_header", &format!("sealed-{name}"), &sealed_mode);
        // A whole pack, sealed under another key: a raw pack as it is stored.
        let mut pack = vec![0x5a; usize::from(blobs)];
        let header = keys.seal(&table);
        pack.extend_from_slice(&header);
        pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
        c.put("pack_header", &format!("raw-{name}"), &with_mode(2, &pack));
    }
    c.put("pack_header", "sealed-empty", &[1, 0, 0, 0]);

    let index = |list: &[(Id, Vec<PackEntry>)]| encode_index_file(list);
    c.put("index_file", "empty", &index(&[]));
    c.put("index_file", "one", &index(&[(id(100), entries(2, 80))]));
    c.put(
        "index_file",
        "three",
        &index(&[
            (id(101), entries(5, 70)),
            (id(102), vec![]),
            (id(103), entries(12, 33)),
        ]),
    );
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: Name(name.to_vec()),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        mtime_ns: 123_456_789,
        ctime: -5,
        ctime_ns: 999_999_999,
        inode: 42,
        size: 0,
        content: None,
        subtree: None,
        target: None,
    }
}

fn trees(c: &Corpus) {
    let mut file = node(b"file", NodeKind::File);
    file.size = 3 << 20;
    file.content = Some(Content::Chunks(vec![id(1), id(2), id(3)]));
    let mut inline = node(b"link", NodeKind::File);
    inline.size = 5;
    inline.content = Some(Content::Inline(InlineBytes(b"sha25".to_vec())));
    let mut gz = node(b"layer.tar.gz", NodeKind::File);
    gz.size = 1 << 20;
    gz.content = Some(Content::Gzip(GzipContent {
        recipe: vec![id(4)],
        plain: vec![id(5), id(6)],
        tail: vec![id(7)],
    }));
    let mut dir = node(b"dir", NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(id(8));
    let mut symlink = node(&[b'l', 0xff, b'n'], NodeKind::Symlink);
    symlink.target = Some(Name(vec![b'.', b'.', b'/', 0xfe]));
    let mut nodes = vec![file, inline, gz, dir, symlink];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let json = |t: &Tree| serde_json::to_vec(t).expect("json");
    c.put("tree", "empty", &json(&Tree::default()));
    c.put(
        "tree",
        "all-kinds",
        &json(&Tree {
            nodes: nodes.clone(),
        }),
    );
    c.put(
        "tree",
        "dir-only",
        &json(&Tree {
            nodes: vec![nodes[0].clone()],
        }),
    );
}

fn snapshots(c: &Corpus) {
    let plain = Snapshot {
        time: time(1_700_000_000, 5),
        host: "host".into(),
        source: SourceRef {
            kind: "fs".into(),
            uri: "/var/lib/registry".into(),
        },
        name: "registry".into(),
        replica_id: None,
        dtr_version: None,
        tags: vec![],
        parent: None,
        tree: id(1),
        summary: Summary {
            files: 10,
            dirs: 2,
            bytes: 12345,
            duration_secs: 1.25,
            ..Summary::default()
        },
        program_version: "0.1.0".into(),
        original: None,
        repaired_from: None,
        tar: None,
        tables: None,
    };
    let full = Snapshot {
        replica_id: Some("0123456789ab".into()),
        dtr_version: Some("2.9.0".into()),
        tags: vec!["nightly".into(), "repaired".into()],
        parent: Some(id(2)),
        original: Some(id(3)),
        repaired_from: Some(id(4)),
        tar: Some(TarLayout {
            skeleton: vec![id(5), id(6)],
            size: 1 << 20,
            sha256: "ab".repeat(32),
            added_top: true,
        }),
        tables: Some(BTreeMap::from([
            ("repos".to_string(), 12),
            ("tags".to_string(), 0),
        ])),
        summary: Summary {
            unreadable: 3,
            gzip_layers: 4,
            gzip_partial: 1,
            gzip_fallbacks: 2,
            adopted_packs: 1,
            duration_secs: 0.000_123_456_789,
            ..plain.summary.clone()
        },
        source: SourceRef {
            kind: "dtr-metadata".into(),
            uri: "-".into(),
        },
        ..plain.clone()
    };
    c.put(
        "snapshot",
        "plain",
        &serde_json::to_vec(&plain).expect("json"),
    );
    c.put(
        "snapshot",
        "full",
        &serde_json::to_vec(&full).expect("json"),
    );
}

fn configs(c: &Corpus) -> Vec<u8> {
    let config = Config {
        version: 1,
        id: "4f1c2a".repeat(8),
        chunker: ChunkerParams::default(),
        compression_level: 3,
        encryption: "aes-256-gcm".into(),
        created: time(1_700_000_000, 0),
        gzip: false,
    };
    let gzip = Config {
        chunker: ChunkerParams::for_gzip_content(),
        gzip: true,
        ..config.clone()
    };
    c.put("config", "default", &config.to_json());
    c.put("config", "gzip", &gzip.to_json());
    c.put(
        "config",
        "golden",
        include_bytes!("../../engine/src/golden/config.json"),
    );
    c.put("config", "newer", br#"{"version": 2, "anything": "else"}"#);
    config.to_json()
}

fn key_files(c: &Corpus, config: &[u8]) {
    let (_, raw) = RawKeys::generate();
    let file = KeyFile::wrap(&raw, Id::hash_of(config), b"password", "host").expect("wrap");
    c.put("key_file", "real", &with_mode(0, &file.to_json()));
    let mut hostile = file.clone();
    hostile.kdf.m_cost = 4_000_000_000;
    hostile.kdf.t_cost = u32::MAX;
    c.put("key_file", "hostile", &with_mode(0, &hostile.to_json()));
    c.put(
        "key_file",
        "golden",
        &with_mode(0, include_bytes!("../../engine/src/golden/key.json")),
    );
    // The key material the fuzz target seals: bound to its config hash, and not.
    let material = |config: Id, key: &[u8]| {
        serde_json::to_vec(&serde_json::json!({
            "encrypt": B64.encode(key),
            "id": B64.encode([9u8; 32]),
            "config": config.to_hex(),
        }))
        .expect("json")
    };
    let bound = Id::hash_of(b"stowage fuzz config");
    c.put(
        "key_file",
        "material",
        &with_mode(1, &material(bound, &[7; 32])),
    );
    c.put(
        "key_file",
        "material-short-key",
        &with_mode(1, &material(bound, &[7; 31])),
    );
    c.put(
        "key_file",
        "material-other-config",
        &with_mode(1, &material(id(1), &[7; 32])),
    );
}

fn compressed(c: &Corpus) {
    let text = b"registry link sha256 layer manifest blob repository tag ".repeat(40);
    let (encoding, packed) = compress(&text, 3);
    assert_eq!(encoding, Compression::Zstd);
    let len = (text.len() as u32).to_le_bytes();
    c.put(
        "compress",
        "zstd",
        &[&[1, len[0], len[1], len[2]][..], &packed].concat(),
    );
    c.put("compress", "none", &[&[0, 5, 0, 0][..], b"hello"].concat());
    c.put(
        "compress",
        "round-trip",
        &[&[0x80, 3, 0, 0][..], &text[..]].concat(),
    );
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Text that compresses like real files do.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "layer",
        "manifest",
        "sha256",
        "blob",
        "tag",
        "repository",
        "\n",
        "{\"a\": 1}",
    ];
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn tars(c: &Corpus, scratch: &Path) {
    let src = scratch.join("tree");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(src.join("dir/sub")).expect("mkdir");
    fs::write(src.join("a.txt"), b"hello\n").expect("write");
    fs::write(src.join("dir/sub/data"), sample(1500, 1)).expect("write");
    fs::write(src.join("empty"), b"").expect("write");
    let long = format!("dir/{}", "long-name-".repeat(12));
    fs::write(src.join(&long), b"long").expect("write");
    std::os::unix::fs::symlink("a.txt", src.join("link")).expect("symlink");
    fs::hard_link(src.join("a.txt"), src.join("dir/hard")).expect("hard link");
    let odd = std::ffi::OsStr::new("caf\u{e9} \u{1F4E6}");
    fs::write(src.join(odd), b"utf-8 name").expect("write");
    run(Command::new("mkfifo").arg(src.join("fifo")));
    let tar = |name: &str, args: &[&str]| {
        let mut cmd = Command::new("tar");
        cmd.args(["-c", "-b", "1", "-C"]).arg(&src).args(args);
        let bytes = run(&mut cmd);
        assert!(bytes.len() < 64 << 10, "{name}: {} bytes", bytes.len());
        c.put("tar_walk", name, &bytes);
    };
    let all = ["."];
    tar("gnu", &[&["--format=gnu"][..], &all].concat());
    tar("pax", &[&["--format=pax"][..], &all].concat());
    tar(
        "pax-times",
        &[
            &[
                "--format=pax",
                "--pax-option=mtime:=1700000000.123456789,atime:=-1.5",
            ][..],
            &all,
        ]
        .concat(),
    );
    tar("oldgnu", &[&["--format=oldgnu"][..], &all].concat());
    tar(
        "ustar",
        &[
            "--format=ustar",
            "a.txt",
            "dir/sub",
            "link",
            "dir/hard",
            "fifo",
        ],
    );
    tar("v7", &["--format=v7", "a.txt", "dir/sub/data", "empty"]);
    tar(
        "big-ids",
        &[
            "--format=pax",
            "--owner=someone:5000000",
            "--group=group:5000001",
            "a.txt",
            "dir",
        ],
    );
    tar(
        "gnu-big-ids",
        &["--format=gnu", "--owner=someone:5000000", "a.txt"],
    );
    // A sparse file: the walker refuses it (unsupported).
    let sparse = src.join("sparse");
    let f = fs::File::create(&sparse).expect("create");
    f.set_len(40_000).expect("truncate");
    drop(f);
    tar("sparse", &["--format=gnu", "--sparse", "sparse"]);
    tar("sparse-pax", &["--format=pax", "--sparse", "sparse"]);
    fs::remove_file(&sparse).expect("rm");
    // Check that the walker reads them whole (fuzz_targets/tar_walk.rs's property).
    for entry in fs::read_dir(c.dir.join("tar_walk")).expect("listing") {
        let path = entry.expect("entry").path();
        let bytes = fs::read(&path).expect("read");
        let mut walker = stowage_engine::fuzzing::TarWalker::new(&bytes[..]);
        let mut ok = false;
        loop {
            match walker.next_item() {
                Ok(stowage_engine::fuzzing::Item::End(_)) => {
                    ok = true;
                    break;
                }
                Ok(stowage_engine::fuzzing::Item::Entry(e)) => {
                    std::io::copy(&mut walker.content(e.size), &mut std::io::sink())
                        .expect("content");
                    walker.padding(e.size).expect("padding");
                }
                Err(e) => {
                    assert!(path.to_string_lossy().contains("sparse"), "{path:?}: {e}");
                    break;
                }
            }
        }
        assert_eq!(ok, !path.to_string_lossy().contains("sparse"), "{path:?}");
    }
}

fn gzips(c: &Corpus, scratch: &Path) {
    for (name, len, level) in [
        ("tiny-6", 700, "-6"),
        ("small-9", 3000, "-9"),
        ("small-1", 5000, "-1"),
        ("mid-6", 40_000, "-6"),
    ] {
        let file = scratch.join(format!("{name}.txt"));
        fs::write(&file, sample(len, len as u64)).expect("write");
        // With the file's name in the header (FNAME), as `gzip file` writes it.
        let gz = run(Command::new("gzip").args(["-c", level]).arg(&file));
        let h = header_len(&gz).expect("a gzip header");
        let mut input = &gz[h..];
        let (plain, pieces, _ending, _unchecked) = split(&mut input, |checked| {
            let mut plain = Vec::new();
            checked.read_to_end(&mut plain).map(|_| plain)
        })
        .expect("split");
        let plain = plain.expect("plaintext");
        let recipe = Recipe {
            header: gz[..h].to_vec(),
            pieces,
        };
        assert!(!recipe.pieces.is_empty(), "{name}: no pieces");
        let bytes = recipe.encode();
        c.put(
            "gzip_recipe",
            &format!("recipe-{name}"),
            &with_mode(0, &bytes),
        );
        c.put(
            "gzip_recipe",
            &format!("header-{name}"),
            &with_mode(1, &gz[..h.max(16).min(gz.len())]),
        );
        if bytes.len() + plain.len() < 8 << 10 {
            let len = u16::try_from(bytes.len()).expect("a small recipe");
            let replay = [&len.to_le_bytes()[..], &bytes, &plain].concat();
            c.put("gzip_rebuild", name, &replay);
        }
    }
}

/// XDR, as an NFS server writes it.
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.fixed(b)
    }
    fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn time(&mut self) -> &mut Self {
        self.u32(1_700_000_000).u32(5)
    }
    fn fattr(&mut self, ftype: u32) -> &mut Self {
        self.u32(ftype).u32(0o644).u32(1).u32(1000).u32(1000);
        self.u64(4096).u64(8192).u32(0).u32(0).u64(77).u64(12345);
        self.time().time().time()
    }
    fn post_op_attr(&mut self) -> &mut Self {
        self.u32(1).fattr(1)
    }
    fn wcc(&mut self) -> &mut Self {
        self.u32(1).u64(10).time().time();
        self.post_op_attr()
    }
    fn fh(&mut self) -> &mut Self {
        self.opaque(&[0xab; 28])
    }
}

/// A complete reply: record mark, RPC header (xid 0: the target writes the call's), body.
fn reply(body: &Xdr) -> Vec<u8> {
    let mut rpc = Xdr::default();
    rpc.u32(0).u32(1).u32(0).u32(0).opaque(&[]).u32(0);
    rpc.0.extend_from_slice(&body.0);
    let mut out = Xdr::default();
    out.u32(0x8000_0000 | rpc.0.len() as u32);
    out.0.extend_from_slice(&rpc.0);
    out.0
}

fn nfs(c: &Corpus) {
    let procedures = stowage_nfs::fuzzing::PROCEDURES;
    let put = |name: &str, body: Xdr, must_decode: bool| {
        let selector = procedures
            .iter()
            .position(|p| name.starts_with(&p.to_lowercase()))
            .expect("procedure") as u8;
        let input = with_mode(selector, &reply(&body));
        let decoded = stowage_nfs::fuzzing::nfs_reply(&input);
        assert_eq!(decoded.is_ok(), must_decode, "{name}: {decoded:?}");
        c.put("nfs_reply", name, &input);
    };
    let mut b = Xdr::default();
    b.u32(0).fattr(2);
    put("getattr", b, true);
    let mut b = Xdr::default();
    b.u32(0).fh().post_op_attr().post_op_attr();
    put("lookup", b, true);
    let mut b = Xdr::default();
    b.u32(2).post_op_attr();
    put("lookup-noent", b, false);
    let mut b = Xdr::default();
    b.u32(0).post_op_attr().fixed(&[1; 8]);
    for (i, name) in [&b"."[..], b"..", b"file", b"dir"].into_iter().enumerate() {
        b.u32(1).u64(100 + i as u64).opaque(name).u64(i as u64 + 1);
        b.post_op_attr().u32(1).fh();
    }
    b.u32(1)
        .u64(200)
        .opaque(b"no-attributes")
        .u64(9)
        .u32(0)
        .u32(0);
    b.u32(0).u32(1);
    put("readdirplus", b, true);
    let mut b = Xdr::default();
    b.u32(10006).post_op_attr();
    put("readdirplus-bad-cookie", b, false);
    let mut b = Xdr::default();
    b.u32(0).post_op_attr().opaque(b"../target");
    put("readlink", b, true);
    let mut b = Xdr::default();
    b.u32(0)
        .post_op_attr()
        .u32(11)
        .u32(1)
        .opaque(b"hello world");
    put("read", b, true);
    let mut b = Xdr::default();
    b.u32(0).wcc().u32(4).u32(0).fixed(&[3; 8]);
    put("write", b, true);
    let mut b = Xdr::default();
    b.u32(10008).wcc();
    put("write-jukebox", b, false);
    let mut b = Xdr::default();
    b.u32(0).wcc().fixed(&[3; 8]);
    put("commit", b, true);
    for name in ["create", "mkdir", "symlink"] {
        let mut b = Xdr::default();
        b.u32(0).u32(1).fh().post_op_attr().wcc();
        put(name, b, true);
    }
    let mut b = Xdr::default();
    b.u32(17).wcc();
    put("create-exists", b, false);
    let mut b = Xdr::default();
    b.u32(0).wcc();
    put("remove", b, true);
    let mut b = Xdr::default();
    b.u32(0).wcc().wcc();
    put("rename", b, true);
    let mut b = Xdr::default();
    b.u32(0).wcc();
    put("setattr", b, true);
    let mut b = Xdr::default();
    b.u32(0).post_op_attr();
    b.u32(1 << 20)
        .u32(1 << 20)
        .u32(4096)
        .u32(1 << 20)
        .u32(1 << 20)
        .u32(4096)
        .u32(4096);
    b.u64(u64::MAX).u32(0).u32(1).u32(0x1b);
    put("fsinfo", b, true);
    let mut b = Xdr::default();
    b.u32(0).fh().u32(2).u32(1).u32(0);
    put("mnt", b, true);
    let mut b = Xdr::default();
    b.u32(13);
    put("mnt-denied", b, false);
    let mut b = Xdr::default();
    b.u32(2049);
    put("getport", b, true);
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let c = Corpus { dir };
    let scratch = std::env::temp_dir().join(format!("stowage-fuzz-seeds-{}", std::process::id()));
    fs::create_dir_all(&scratch).expect("scratch dir");
    packs(&c);
    trees(&c);
    snapshots(&c);
    let config = configs(&c);
    key_files(&c, &config);
    compressed(&c);
    tars(&c, &scratch);
    gzips(&c, &scratch);
    nfs(&c);
    fs::remove_dir_all(&scratch).expect("scratch dir");
    println!("seeds written to {}", c.dir.display());
}
