//! Golden vectors of the repository format, version 1 (FORMAT.md), byte for byte.
//!
//! Every object kind is built here with fixed keys, fixed nonces
//! ([`crate::format::crypto::test_nonces`]) and fixed times and ids, through the encoders the
//! pipelines use, and compared with the bytes committed in `engine/src/golden/`. The
//! committed bytes are then decoded again and compared with the values they were made from.
//!
//! **A failing golden test means the FORMAT changed**: bytes written by this build differ
//! from those of the committed version-1 objects, or the committed objects no longer read
//! back. A refactor must leave these tests passing unchanged. A deliberate format change
//! (with a new FORMAT.md version) regenerates the vectors with one command and commits them
//! with the change:
//!
//! ```text
//! STOWAGE_BLESS=1 cargo test -p stowage-engine golden
//! ```
//!
//! One exception: the zstd blob (`blob-zstd.hex`, and the packs holding zstd blobs) pins
//! libzstd's output, which a zstd upgrade may change without any format change. If only
//! the encoding side of those fails after such an upgrade while every decoding check
//! passes, re-blessing is right.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use stowage_backends::memory::MemoryStore;
use stowage_backends::{Buffered, KvStore, MemoryKv, Store, Upload};

use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::compress::{compress, decompress, Compression};
use crate::format::crypto::{test_nonces, KdfParams, KeyFile, Keys};
use crate::format::id::Id;
use crate::format::index_file::{decode_index_file, encode_index_file, PackList};
use crate::format::marks::Mark;
use crate::format::pack::{verified_header, BlobKind, Pack, PackBuilder, PackEntry};
use crate::format::snapshot::{Snapshot, SourceRef, Summary, TarLayout};
use crate::format::tree::{Content, GzipContent, InlineBytes, Name, Node, NodeKind, Tree};
use crate::gzip::{Piece, Recipe};
use crate::repo::{Config, Repository};

const PASSWORD: &[u8] = b"golden password";

// ---------------------------------------------------------------------------------------
// Vector files
// ---------------------------------------------------------------------------------------

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/golden")
        .join(name)
}

fn blessing() -> bool {
    std::env::var_os("STOWAGE_BLESS").is_some_and(|v| v == "1")
}

/// Hex, 32 bytes a line.
fn to_hex_lines(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(32) {
        out.push_str(&hex::encode(line));
        out.push('\n');
    }
    out
}

fn from_hex_lines(text: &[u8], name: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    hex::decode(digits).unwrap_or_else(|e| panic!("golden vector {name} is not hex: {e}"))
}

/// The committed vector `name` (hex text when the name ends in `.hex`, the bytes
/// themselves otherwise); under `STOWAGE_BLESS=1`, `actual`.
fn committed(name: &str, actual: &[u8]) -> Vec<u8> {
    if blessing() {
        return actual.to_vec();
    }
    let path = vector_path(name);
    let stored = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden vector {}: {e} (STOWAGE_BLESS=1 writes it)",
            path.display()
        )
    });
    match name.ends_with(".hex") {
        true => from_hex_lines(&stored, name),
        false => stored,
    }
}

/// Checks that `actual` is the committed vector `name` byte for byte (under
/// `STOWAGE_BLESS=1`, writes it instead); returns the committed bytes.
fn golden(name: &str, actual: &[u8]) -> Vec<u8> {
    if blessing() {
        let text = match name.ends_with(".hex") {
            true => to_hex_lines(actual).into_bytes(),
            false => actual.to_vec(),
        };
        std::fs::write(vector_path(name), text).expect("write the golden vector");
        return actual.to_vec();
    }
    let want = committed(name, actual);
    if want != actual {
        let at = want
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(actual.len()));
        let show = |bytes: &[u8]| match name.ends_with(".hex") {
            true => hex::encode(&bytes[at.min(bytes.len())..(at + 32).min(bytes.len())]),
            false => String::from_utf8_lossy(bytes).into_owned(),
        };
        panic!(
            "{name}: the FORMAT changed. These bytes differ from the committed version-1 \
             vector from byte {at} on (committed {} bytes, now {}).\n\
             committed: {}\nnow:       {}\n\
             If the change is deliberate, bump the format version in FORMAT.md and run \
             STOWAGE_BLESS=1 cargo test -p stowage-engine golden",
            want.len(),
            actual.len(),
            show(&want),
            show(actual),
        );
    }
    want
}

// ---------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------

/// The master keys: encryption key 00 01 .. 1f, id key 40 41 .. 5f.
fn keys() -> Keys {
    let seq = |start: u8| -> [u8; 32] { std::array::from_fn(|i| start + i as u8) };
    Keys::from_bytes(seq(0x00), seq(0x40))
}

fn time(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().expect("a valid time")
}

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

/// splitmix64: incompressible bytes, the same for a seed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn config() -> Config {
    Config {
        version: 1,
        id: "5d".repeat(32),
        chunker: ChunkerParams::for_gzip_content(),
        compression_level: 3,
        encryption: "aes-256-gcm".into(),
        created: time(T0),
        gzip: true,
    }
}

/// argon2id with the smallest costs, so the test is quick; the salt is fixed.
fn kdf() -> KdfParams {
    KdfParams {
        algorithm: "argon2id".into(),
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
        salt: B64.encode(b"golden salt 16 b"),
    }
}

fn recipe() -> Recipe {
    Recipe {
        header: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
        pieces: vec![
            Piece {
                plain: 4 << 20,
                compressed: 1_234_567,
                corrections: b"corrections of piece 0".to_vec(),
            },
            Piece {
                plain: 70_000,
                compressed: 20_001,
                corrections: Vec::new(),
            },
        ],
    }
}

fn node(name: &[u8], kind: NodeKind, mode: u32, size: u64) -> Node {
    Node {
        name: Name(name.to_vec()),
        kind,
        mode,
        uid: 1000,
        gid: 1001,
        mtime: T0,
        mtime_ns: 123_456_789,
        ctime: T0 + 1,
        ctime_ns: 987_654_321,
        inode: 4242,
        size,
        content: None,
        subtree: None,
        target: None,
    }
}

/// A directory with one node of every kind and content encoding.
fn dir_tree(k: &Keys, data: &[BuiltBlob], empty: Id) -> Tree {
    let link = format!("sha256:{}", "e3".repeat(32));
    let mut blobs = node(b"blobs", NodeKind::Dir, 0o1755, 0);
    blobs.subtree = Some(empty);
    let mut chunked = node(b"data", NodeKind::File, 0o644, 0);
    chunked.size = data.iter().map(|b| b.plain.len() as u64).sum();
    chunked.content = Some(Content::Chunks(data.iter().map(|b| b.id).collect()));
    let mut inline = node(b"link", NodeKind::File, 0o600, link.len() as u64);
    inline.content = Some(Content::Inline(InlineBytes(link.into_bytes())));
    let mut symlink = node(b"current", NodeKind::Symlink, 0o777, 4);
    symlink.target = Some(Name(b"data".to_vec()));
    let mut raw_link = node(b"raw-link", NodeKind::Symlink, 0o777, 3);
    raw_link.target = Some(Name(vec![0xfe, b'/', b'x']));
    let mut raw_name = node(&[b'n', 0xff, b'x'], NodeKind::File, 0o4755, 9);
    raw_name.content = Some(Content::Inline(InlineBytes(b"not utf-8".to_vec())));
    let mut gzip = node(
        b"layer.tar.gz",
        NodeKind::File,
        0o644,
        1_234_577 + 20_001 + 8,
    );
    gzip.content = Some(Content::Gzip(GzipContent {
        recipe: vec![k.blob_id(&recipe().encode())],
        plain: vec![k.blob_id(b"plain 0"), k.blob_id(b"plain 1")],
        tail: vec![k.blob_id(b"trailer!")],
    }));
    let mut nodes = vec![blobs, chunked, inline, symlink, raw_link, raw_name, gzip];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Tree { nodes }
}

fn snapshots(root: Id) -> Vec<Snapshot> {
    let full = Snapshot {
        time: time(T0 + 7200),
        host: "golden-host".into(),
        source: SourceRef {
            kind: "fs".into(),
            uri: "/var/lib/docker/volumes/dtr-registry-ab12".into(),
        },
        name: "dtr-registry-ab12".into(),
        replica_id: Some("ab12".into()),
        dtr_version: Some("2.9.1".into()),
        tags: vec!["nightly".into(), "golden".into()],
        parent: Some(Id([0x77; 32])),
        tree: root,
        summary: Summary {
            files: 1,
            dirs: 2,
            symlinks: 3,
            bytes: 4,
            files_read: 5,
            bytes_read: 6,
            files_unchanged: 7,
            new_blobs: 8,
            new_bytes: 9,
            stored_bytes: 10,
            new_packs: 11,
            adopted_packs: 12,
            gzip_layers: 13,
            gzip_partial: 14,
            gzip_fallbacks: 15,
            // Written only when not 0: snapshots without it keep their bytes.
            unreadable: 0,
            digest_mismatches: 0,
            mismatched: Vec::new(),
            excluded: 0,
            skipped: false,
            duration_secs: 16.25,
        },
        program_version: "0.1.0".into(),
        original: Some(Id([0x66; 32])),
        repaired_from: None,
        tar: Some(TarLayout {
            skeleton: vec![Id([0x55; 32]), Id([0x56; 32])],
            size: 10_240,
            sha256: "ab".repeat(32),
            added_top: true,
        }),
        tables: Some(BTreeMap::from([
            ("rethink/repositories".to_string(), 3),
            ("rethink/tags".to_string(), 0),
        ])),
    };
    let minimal = Snapshot {
        time: time(T0 + 3600),
        host: "golden-host".into(),
        source: SourceRef {
            kind: "fs".into(),
            uri: "/srv/registry".into(),
        },
        name: "registry".into(),
        replica_id: None,
        dtr_version: None,
        tags: Vec::new(),
        parent: None,
        tree: root,
        summary: Summary::default(),
        program_version: "0.1.0".into(),
        original: None,
        repaired_from: None,
        tar: None,
        tables: None,
    };
    vec![minimal, full]
}

fn marks() -> Vec<Mark> {
    vec![
        Mark::new(Id([0xd1; 32]), time(T0), chrono::Duration::hours(24)),
        Mark::new(Id([0xd2; 32]), time(T0 + 60), chrono::Duration::seconds(0)),
    ]
}

// ---------------------------------------------------------------------------------------
// Building every object through the encoders the pipelines use
// ---------------------------------------------------------------------------------------

struct BuiltBlob {
    plain: Vec<u8>,
    id: Id,
    compression: Compression,
    sealed: Vec<u8>,
}

/// A blob as `Packer::add` stores it: `seal(compress(plaintext))`.
fn build_blob(k: &Keys, level: i32, plain: Vec<u8>) -> BuiltBlob {
    let (compression, stored) = compress(&plain, level);
    let sealed = k.seal(&stored);
    BuiltBlob {
        id: k.blob_id(&plain),
        plain,
        compression,
        sealed,
    }
}

struct BuiltPack {
    id: Id,
    entries: Vec<PackEntry>,
    bytes: Vec<u8>,
}

/// A pack as `Packer` writes one, stored in `store`.
async fn build_pack(
    k: &Keys,
    store: &dyn Store,
    kind: BlobKind,
    blobs: &[&BuiltBlob],
) -> BuiltPack {
    let mut builder = PackBuilder::default();
    for b in blobs {
        let start = || -> crate::Result<Box<dyn Upload>> { Ok(Box::new(Buffered::default())) };
        builder
            .add(start, kind, b.id, b.compression, b.plain.len(), &b.sealed)
            .expect("add to a pack");
    }
    let pack = builder
        .finish(k)
        .expect("finish the pack")
        .expect("a pack with blobs");
    let (id, entries) = (pack.id, pack.entries.clone());
    pack.store(store).await.expect("store the pack");
    let bytes = store.get(&Pack::key(&id)).await.expect("stored").to_vec();
    BuiltPack { id, entries, bytes }
}

struct BuiltTree {
    tree: Tree,
    json: Vec<u8>,
    blob: BuiltBlob,
}

/// A tree blob as the archiver stores it.
fn build_tree(k: &Keys, level: i32, tree: Tree) -> BuiltTree {
    let json = serde_json::to_vec(&tree).expect("trees serialize");
    BuiltTree {
        blob: build_blob(k, level, json.clone()),
        json,
        tree,
    }
}

/// A sealed object of the repository (`index/`, `snapshots/`, `marks/`) and its id.
struct BuiltObject {
    id: Id,
    sealed: Vec<u8>,
    plain: Vec<u8>,
}

async fn read_object(store: &dyn Store, k: &Keys, dir: &str, id: Id) -> BuiltObject {
    let sealed = store
        .get(&format!("{dir}/{id}"))
        .await
        .expect("stored object")
        .to_vec();
    let plain = k.open(&sealed, String::new).expect("opens");
    BuiltObject { id, sealed, plain }
}

struct Built {
    config: Config,
    config_json: Vec<u8>,
    key_file: KeyFile,
    key_json: Vec<u8>,
    /// A blob stored raw and one zstd-compressed.
    data: Vec<BuiltBlob>,
    data_pack: BuiltPack,
    empty_tree: BuiltTree,
    dir_tree: BuiltTree,
    root_tree: BuiltTree,
    tree_pack: BuiltPack,
    index_packs: PackList,
    index: BuiltObject,
    snapshots: Vec<(Snapshot, BuiltObject)>,
    marks: Vec<Mark>,
    mark_file: BuiltObject,
    recipe: Recipe,
    recipe_bytes: Vec<u8>,
}

fn open_kv() -> impl FnOnce(&str) -> crate::Result<Arc<dyn KvStore>> + Send + 'static {
    |_| Ok(Arc::new(MemoryKv::new()) as Arc<dyn KvStore>)
}

/// Every object, each with its own range of nonces. Sealing happens on the calling thread
/// (the tests run on a current-thread runtime), where the nonce counter is set; so the
/// guards may live across `.await`s.
async fn build() -> Built {
    let k = keys();
    let config = config();
    let config_json = config.to_json();
    let key_file = {
        let _nonces = test_nonces::counting(0x100);
        KeyFile::wrap_with(
            &k.raw(),
            Id::hash_of(&config_json),
            PASSWORD,
            "golden-host",
            kdf(),
            time(T0),
        )
        .expect("wrap the keys")
    };
    let key_json = key_file.to_json();

    // A repository holding this config and key file: the objects below are written through
    // it as the pipelines write them.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put("keys/golden", key_json.clone().into())
        .await
        .expect("put");
    store
        .put("config", config_json.clone().into())
        .await
        .expect("put");
    let repo = Repository::open(Arc::clone(&store), PASSWORD, open_kv())
        .await
        .expect("the golden repository opens");
    assert!(repo.keys().same_material(&k));
    let level = config.compression_level;

    let data = {
        let _nonces = test_nonces::counting(0x200);
        vec![
            build_blob(&k, level, pseudo_random(300, 1)),
            build_blob(
                &k,
                level,
                format!("sha256:{} ", "e3".repeat(32))
                    .repeat(20)
                    .into_bytes(),
            ),
        ]
    };
    let data_pack = {
        let _nonces = test_nonces::counting(0x300);
        build_pack(&k, store.as_ref(), BlobKind::Data, &[&data[0], &data[1]]).await
    };
    let (empty_tree, dir_tree, root_tree) = {
        let _nonces = test_nonces::counting(0x400);
        let empty = build_tree(&k, level, Tree::default());
        let dir = build_tree(&k, level, dir_tree(&k, &data, empty.blob.id));
        let mut top = node(b"golden-volume", NodeKind::Dir, 0o755, 0);
        top.subtree = Some(dir.blob.id);
        let root = build_tree(&k, level, Tree { nodes: vec![top] });
        (empty, dir, root)
    };
    let tree_pack = {
        let _nonces = test_nonces::counting(0x500);
        let trees = [&empty_tree.blob, &dir_tree.blob, &root_tree.blob];
        build_pack(&k, store.as_ref(), BlobKind::Tree, &trees).await
    };

    // As `Unindexed::flush` writes an index file.
    let index_packs = vec![
        (data_pack.id, data_pack.entries.clone()),
        (tree_pack.id, tree_pack.entries.clone()),
    ];
    let index_id = {
        let _nonces = test_nonces::counting(0x600);
        repo.save_sealed("index", &encode_index_file(&index_packs))
            .await
            .expect("save the index file")
    };
    let index = read_object(store.as_ref(), &k, "index", index_id).await;

    let mut saved = Vec::new();
    for (n, snapshot) in snapshots(root_tree.blob.id).into_iter().enumerate() {
        let id = {
            let _nonces = test_nonces::counting(0x700 + 0x10 * n as u64);
            repo.save_json("snapshots", &snapshot)
                .await
                .expect("save the snapshot")
        };
        saved.push((
            snapshot,
            read_object(store.as_ref(), &k, "snapshots", id).await,
        ));
    }

    let marks = marks();
    let mark_id = {
        let _nonces = test_nonces::counting(0x800);
        crate::repo::marks::write(store.as_ref(), &k, marks.clone())
            .await
            .expect("write the marks")
            .expect("a mark file")
    };
    let mark_file = read_object(store.as_ref(), &k, "marks", mark_id).await;

    let recipe = recipe();
    let recipe_bytes = recipe.encode();
    Built {
        config,
        config_json,
        key_file,
        key_json,
        data,
        data_pack,
        empty_tree,
        dir_tree,
        root_tree,
        tree_pack,
        index_packs,
        index,
        snapshots: saved,
        marks,
        mark_file,
        recipe,
        recipe_bytes,
    }
}

/// Opens a blob as a reader does: authenticated, decompressed, checked against its id.
fn open_blob(k: &Keys, sealed: &[u8], entry: &PackEntry) -> Vec<u8> {
    let stored = k.open(sealed, String::new).expect("the blob opens");
    let plain = decompress(
        entry.compression,
        stored,
        entry.raw_length as usize,
        String::new,
    )
    .expect("the blob decompresses");
    assert_eq!(k.blob_id(&plain), entry.id, "blob id of the plaintext");
    plain
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[test]
fn ids_and_chunker_seed() {
    let k = keys();
    let mut text = String::new();
    for input in [&b""[..], b"stowage", b"registry link"] {
        let label = String::from_utf8_lossy(input);
        text.push_str(&format!("blob_id({label:?}) {}\n", k.blob_id(input)));
        text.push_str(&format!("hash_of({label:?}) {}\n", Id::hash_of(input)));
    }
    text.push_str(&format!("chunker_seed {:#018x}\n", k.chunker_seed()));
    let committed = golden("ids.txt", text.as_bytes());
    assert_eq!(committed, text.as_bytes());
}

#[tokio::test]
async fn config_json() {
    let b = build().await;
    let bytes = golden("config.json", &b.config_json);
    let back: Config = serde_json::from_slice(&bytes).expect("config parses");
    assert_eq!(back, b.config);
}

#[tokio::test]
async fn key_file() {
    let b = build().await;
    let bytes = golden("key.json", &b.key_json);
    let back: KeyFile = serde_json::from_slice(&bytes).expect("key file parses");
    assert_eq!(back.created, b.key_file.created);
    assert_eq!(back.host, "golden-host");
    assert_eq!(back.kdf, kdf());
    assert_eq!(back.data, b.key_file.data);
    let config_hash = Id::hash_of(&committed("config.json", &b.config_json));
    let opened = back
        .unwrap(PASSWORD, config_hash)
        .expect("unwrap")
        .expect("the password opens the key file");
    assert!(opened.same_material(&keys()));
    assert!(back
        .unwrap(b"wrong", config_hash)
        .expect("unwrap")
        .is_none());
}

#[tokio::test]
async fn data_blobs_raw_and_zstd() {
    let b = build().await;
    let k = keys();
    for (name, blob, compression) in [
        ("blob-raw.hex", &b.data[0], Compression::None),
        ("blob-zstd.hex", &b.data[1], Compression::Zstd),
    ] {
        assert_eq!(blob.compression, compression, "{name}");
        let sealed = golden(name, &blob.sealed);
        let entry = PackEntry {
            kind: BlobKind::Data,
            compression,
            id: blob.id,
            offset: 0,
            length: sealed.len() as u32,
            raw_length: blob.plain.len() as u32,
        };
        assert_eq!(open_blob(&k, &sealed, &entry), blob.plain, "{name}");
    }
}

#[tokio::test]
async fn packs_with_header_and_trailer() {
    let b = build().await;
    let k = keys();
    for (name, pack, blobs) in [
        ("pack-data.hex", &b.data_pack, vec![&b.data[0], &b.data[1]]),
        (
            "pack-tree.hex",
            &b.tree_pack,
            vec![&b.empty_tree.blob, &b.dir_tree.blob, &b.root_tree.blob],
        ),
    ] {
        let bytes = golden(name, &pack.bytes);
        assert_eq!(pack.id, Id::hash_of(&bytes), "{name}: the id is the hash");
        let entries = verified_header(&k, &pack.id, &bytes).expect("the header reads");
        assert_eq!(entries, pack.entries, "{name}");
        for (entry, blob) in entries.iter().zip(blobs) {
            let range = entry.offset as usize..(entry.offset + entry.length) as usize;
            assert_eq!(&bytes[range.clone()], &blob.sealed[..], "{name}");
            assert_eq!(open_blob(&k, &bytes[range], entry), blob.plain, "{name}");
        }
    }
}

#[tokio::test]
async fn tree_blobs() {
    let b = build().await;
    for (name, tree) in [
        ("tree-empty.json", &b.empty_tree),
        ("tree-dir.json", &b.dir_tree),
        ("tree-root.json", &b.root_tree),
    ] {
        let json = golden(name, &tree.json);
        let back: Tree = serde_json::from_slice(&json).expect("tree parses");
        assert_eq!(back, tree.tree, "{name}");
    }
    let dir = &b.dir_tree.tree;
    assert!(dir.nodes.windows(2).all(|w| w[0].name.0 < w[1].name.0));
    assert!(dir.find(&[b'n', 0xff, b'x']).is_some());
}

#[tokio::test]
async fn index_file() {
    let b = build().await;
    let sealed = golden("index.hex", &b.index.sealed);
    assert_eq!(b.index.id, Id::hash_of(&sealed));
    let plain = keys().open(&sealed, String::new).expect("opens");
    assert!(plain.starts_with(b"STWIDX01"));
    assert_eq!(plain, b.index.plain);
    assert_eq!(
        decode_index_file(&plain, String::new).expect("decodes"),
        b.index_packs
    );
}

#[tokio::test]
async fn snapshot_objects() {
    let b = build().await;
    for ((snapshot, object), name) in b.snapshots.iter().zip(["minimal", "full"]) {
        let json = golden(&format!("snapshot-{name}.json"), &object.plain);
        let sealed = golden(&format!("snapshot-{name}.hex"), &object.sealed);
        assert_eq!(object.id, Id::hash_of(&sealed));
        assert_eq!(keys().open(&sealed, String::new).expect("opens"), json);
        let back: Snapshot = serde_json::from_slice(&json).expect("snapshot parses");
        assert_eq!(&back, snapshot, "{name}");
    }
}

#[tokio::test]
async fn mark_file() {
    let b = build().await;
    let json = golden("marks.json", &b.mark_file.plain);
    let sealed = golden("marks.hex", &b.mark_file.sealed);
    assert_eq!(b.mark_file.id, Id::hash_of(&sealed));
    assert_eq!(keys().open(&sealed, String::new).expect("opens"), json);
    let store = MemoryStore::new();
    store
        .put(&format!("marks/{}", b.mark_file.id), sealed.into())
        .await
        .expect("put");
    let loaded = crate::repo::marks::load(&store, &keys())
        .await
        .expect("marks load");
    assert_eq!(loaded.files, vec![b.mark_file.id]);
    for mark in &b.marks {
        assert_eq!(loaded.by_pack.get(&mark.pack), Some(mark));
    }
    assert_eq!(loaded.by_pack.len(), b.marks.len());
}

#[tokio::test]
async fn gzip_recipe() {
    let b = build().await;
    let bytes = golden("gzip-recipe.hex", &b.recipe_bytes);
    assert!(bytes.starts_with(b"STWGZIP1"));
    assert_eq!(Recipe::decode(&bytes, "recipe").expect("decodes"), b.recipe);
    assert_eq!(crate::gzip::header_len(&b.recipe.header), Some(10));
}

/// The committed objects under their keys make a repository the read path opens: config,
/// key file, packs, index file, snapshots and marks.
#[tokio::test]
async fn committed_objects_read_as_a_repository() {
    let b = build().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let put = |key: String, bytes: Vec<u8>| {
        let store = Arc::clone(&store);
        async move { store.put(&key, bytes.into()).await.expect("put") }
    };
    put("config".into(), committed("config.json", &b.config_json)).await;
    put("keys/golden".into(), committed("key.json", &b.key_json)).await;
    for (name, pack) in [
        ("pack-data.hex", &b.data_pack),
        ("pack-tree.hex", &b.tree_pack),
    ] {
        put(Pack::key(&pack.id), committed(name, &pack.bytes)).await;
    }
    put(
        format!("index/{}", b.index.id),
        committed("index.hex", &b.index.sealed),
    )
    .await;
    for ((_, object), name) in b.snapshots.iter().zip(["minimal", "full"]) {
        let sealed = committed(&format!("snapshot-{name}.hex"), &object.sealed);
        put(format!("snapshots/{}", object.id), sealed).await;
    }
    put(
        format!("marks/{}", b.mark_file.id),
        committed("marks.hex", &b.mark_file.sealed),
    )
    .await;

    let repo = Repository::open(Arc::clone(&store), PASSWORD, open_kv())
        .await
        .expect("opens");
    assert_eq!(repo.config(), &b.config);
    assert!(repo.keys().same_material(&keys()));
    let snapshots = repo.snapshots().await.expect("snapshots");
    let want: Vec<(Id, Snapshot)> = b.snapshots.iter().map(|(s, o)| (o.id, s.clone())).collect();
    assert_eq!(snapshots, want);
    let root = repo
        .load_tree(&snapshots[0].1.tree)
        .await
        .expect("root tree");
    assert_eq!(root, b.root_tree.tree);
    let dir_id = root.nodes[0].subtree.expect("a subtree");
    assert_eq!(
        repo.load_tree(&dir_id).await.expect("tree"),
        b.dir_tree.tree
    );
    for blob in &b.data {
        assert_eq!(repo.read_blob(&blob.id).await.expect("blob"), blob.plain);
    }
    let marks = crate::repo::marks::load(store.as_ref(), repo.keys())
        .await
        .expect("marks");
    assert_eq!(marks.by_pack.len(), b.marks.len());
}

/// FastCDC cut points of 4 MiB of pseudo-random bytes under the chunker seed of the fixed
/// keys, with small chunks and with the gzip-content parameters: pins the `fastcdc` crate
/// (normalization level 1, seeded gear table) and the streaming chunker around it.
#[test]
fn fastcdc_cut_points() {
    let data = pseudo_random(4 << 20, 0x5eed);
    let seed = keys().chunker_seed();
    let mut text = String::new();
    for (label, params) in [
        (
            "min 4096 avg 16384 max 65536",
            ChunkerParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
        ),
        ("gzip content", ChunkerParams::for_gzip_content()),
    ] {
        text.push_str(&format!("# {label}\n"));
        let mut offset = 0usize;
        Chunker::new(params, seed)
            .chunk(&data[..], data.len() as u64, |c| -> std::io::Result<()> {
                offset += c.len();
                text.push_str(&format!("{offset}\n"));
                Ok(())
            })
            .expect("chunk");
        assert_eq!(offset, data.len());
    }
    golden("cdc-cuts.txt", text.as_bytes());
}
