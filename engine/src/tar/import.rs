//! Tar streams in (FORMAT.md, "Tar snapshots"): `backup_tar` reads the stream -> each
//! entry's content chunked and deduplicated on its own -> a tree of the entries (so `ls`,
//! `dump` and directory restores work as for any snapshot) -> the skeleton (every byte that
//! is not entry content) stored as data blobs -> index -> snapshot. Used by
//! `backup-metadata` (DTR metadata tars) and `import-tar` (image tars). The exact tar comes
//! out again through [`super::original`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::normalize;
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, SourceRef, Summary, TarLayout};
use crate::format::tree::{Content, Name, Node, NodeKind, Tree};
use crate::progress::Progress;
use crate::repo::packer::Packer;
use crate::repo::Repository;
use crate::runtime;
use crate::tar::walk::{Item, Kind, TarWalker};

#[derive(Debug, Clone)]
pub struct TarOptions {
    pub host: String,
    pub tags: Vec<String>,
    pub replica_id: Option<String>,
    /// Recorded as the snapshot's source: kind (`tar`, `dtr-metadata`) and location.
    pub kind: String,
    pub uri: String,
    /// The top directory's name when the tar has several top-level entries.
    pub fallback_name: String,
    /// A DTR metadata backup: the top directory must be `dtr-backup-v<version>`; the version
    /// and the tables' row counts are recorded.
    pub dtr_metadata: bool,
    pub pack_size: usize,
}

/// An entry as the tree will hold it.
struct Parsed {
    /// Normalised path components (no `.`, no `..`, no empty ones).
    path: Vec<Vec<u8>>,
    node: Node,
    hard_link: Option<Vec<Vec<u8>>>,
}

struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The skeleton as it is read: stored chunk by chunk as it grows, so memory stays bounded
/// however many entries the tar has. Only chunks followed by more bytes are cut (a chunk's
/// end depends on the bytes after its start only), so the chunks are those of the whole.
struct SkeletonSink<'a> {
    repo: &'a Repository,
    packer: &'a Packer,
    buffer: Vec<u8>,
    ids: Vec<Id>,
    /// Bytes gathered before chunking what can be cut.
    flush_at: usize,
}

impl SkeletonSink<'_> {
    fn extend(&mut self, bytes: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= self.flush_at {
            self.store(false)?;
        }
        Ok(())
    }

    /// Stores the chunks of the buffer; all of them at the `end`, else all but the last.
    fn store(&mut self, end: bool) -> Result<()> {
        let mut chunks = chunk_bytes(self.repo, &self.buffer);
        let keep = match end {
            true => 0,
            false => chunks.pop().map_or(0, |last| last.len()),
        };
        for chunk in chunks {
            let (id, pack) = self.packer.add(BlobKind::Data, chunk)?;
            self.packer.submit_blocking(pack)?;
            self.ids.push(id);
        }
        let cut = self.buffer.len() - keep;
        self.buffer.drain(..cut);
        Ok(())
    }
}

impl Write for SkeletonSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything parsed from the stream.
struct Ingested {
    entries: Vec<Parsed>,
    skeleton: Vec<Id>,
    size: u64,
    sha256: String,
}

/// Reads the stream to its end, storing entry contents through `packer`.
fn ingest(
    repo: &Repository,
    packer: &Packer,
    reader: Box<dyn Read + Send>,
    dtr_metadata: bool,
    progress: &dyn Progress,
    bytes_in: &AtomicU64,
) -> Result<Ingested> {
    let mut walker = TarWalker::new(HashingReader {
        inner: reader,
        sha: Sha256::new(),
        bytes: 0,
    });
    let chunker = repo.chunker();
    let mut buffer = Vec::new();
    let mut skeleton = SkeletonSink {
        repo,
        packer,
        buffer: Vec::new(),
        ids: Vec::new(),
        flush_at: 32 << 20,
    };
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let entry = match walker.next_item()? {
            Item::End(first) => {
                skeleton.extend(&first)?;
                std::io::copy(walker.rest(), &mut skeleton)
                    .map_err(|e| Error::io("the tar stream", e))?;
                break;
            }
            Item::Entry(entry) => entry,
        };
        skeleton.extend(&entry.raw)?;
        let path = normalize(&entry.path)?;
        let content_in_tree = matches!(entry.kind, Kind::File | Kind::HardLink);
        let mut ids = Vec::new();
        if content_in_tree {
            let what = String::from_utf8_lossy(&entry.path).into_owned();
            chunker
                .chunk_with(
                    &mut buffer,
                    walker.content(entry.size),
                    entry.size,
                    |chunk| -> Result<()> {
                        let (id, pack) = packer.add(BlobKind::Data, chunk)?;
                        packer.submit_blocking(pack)?;
                        ids.push(id);
                        progress.advance(chunk.len() as u64);
                        bytes_in.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        Ok(())
                    },
                )
                .map_err(|e| match e {
                    Error::Io { cause, .. } => Error::bad_input(what.clone(), cause.to_string()),
                    e => e,
                })?;
        } else if entry.size > 0 {
            // Content of anything else (a device's, say) stays in the skeleton.
            std::io::copy(&mut walker.content(entry.size), &mut skeleton)
                .map_err(|e| Error::bad_input("the tar", e.to_string()))?;
        }
        skeleton.extend(&walker.padding(entry.size)?)?;
        let Some(path) = path else {
            if content_in_tree && entry.size > 0 {
                return Err(Error::bad_input(
                    "the tar",
                    format!(
                        "a file named {:?} has no usable path",
                        String::from_utf8_lossy(&entry.path)
                    ),
                ));
            }
            continue;
        };
        if dtr_metadata && entries.is_empty() && !path[0].starts_with(b"dtr-backup-v") {
            return Err(not_dtr(&path[0]));
        }
        if entry.kind == Kind::Other {
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(Error::bad_input(
                "the tar",
                format!(
                    "it holds {:?} twice (an appended archive?); such tars are not supported",
                    String::from_utf8_lossy(&entry.path)
                ),
            ));
        }
        let kind = match entry.kind {
            Kind::Dir => NodeKind::Dir,
            Kind::Symlink => NodeKind::Symlink,
            _ => NodeKind::File,
        };
        let id_field = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| Error::bad_input("the tar", format!("{what} {v} is out of range")))
        };
        let hard_link = match entry.kind {
            Kind::HardLink => Some(
                entry
                    .link
                    .as_deref()
                    .and_then(|l| normalize(l).transpose())
                    .transpose()?
                    .ok_or_else(|| Error::bad_input("the tar", "a hard link without a target"))?,
            ),
            _ => None,
        };
        let name = path.last().cloned().unwrap_or_default();
        entries.push(Parsed {
            node: Node {
                name: Name(name),
                kind,
                mode: entry.mode,
                uid: id_field(entry.uid, "uid")?,
                gid: id_field(entry.gid, "gid")?,
                mtime: entry.mtime,
                mtime_ns: entry.mtime_ns,
                ctime: entry.mtime,
                ctime_ns: entry.mtime_ns,
                inode: 0,
                size: if kind == NodeKind::File {
                    entry.size
                } else {
                    0
                },
                content: (kind == NodeKind::File).then_some(Content::Chunks(ids)),
                subtree: None,
                target: match kind {
                    NodeKind::Symlink => entry.link.map(Name),
                    _ => None,
                },
            },
            path,
            hard_link,
        });
    }
    skeleton.store(true)?;
    let reader = walker.into_inner();
    Ok(Ingested {
        entries,
        skeleton: skeleton.ids,
        size: reader.bytes,
        sha256: hex::encode(reader.sha.finalize()),
    })
}

/// A directory being assembled: its own node (when the tar had an entry for it) and its
/// children.
#[derive(Default)]
struct DirBuild {
    node: Option<Node>,
    children: BTreeMap<Vec<u8>, Node>,
}

/// Stores the trees of `entries` under a top directory; returns the root tree's id, the
/// top directory's name and whether it was added.
async fn store_trees(
    packer: &Packer,
    mut entries: Vec<Parsed>,
    fallback_name: &str,
) -> Result<(Id, Vec<u8>, bool, Summary)> {
    // Hard links in the tree get their target's content (the tar has none for them).
    let contents: HashMap<Vec<Vec<u8>>, (u64, Option<Content>)> = entries
        .iter()
        .filter(|e| e.node.kind == NodeKind::File && e.hard_link.is_none())
        .map(|e| (e.path.clone(), (e.node.size, e.node.content.clone())))
        .collect();
    for entry in entries.iter_mut() {
        if let (Some(target), 0) = (&entry.hard_link, entry.node.size) {
            let (size, content) = contents.get(target).cloned().ok_or_else(|| {
                Error::bad_input(
                    "the tar",
                    format!(
                        "hard link {:?} points to no earlier file",
                        String::from_utf8_lossy(&entry.path.join(&b'/'))
                    ),
                )
            })?;
            entry.node.size = size;
            entry.node.content = content;
        }
    }
    let tops: HashSet<&Vec<u8>> = entries.iter().map(|e| &e.path[0]).collect();
    let single_top = tops.len() == 1
        && entries
            .iter()
            .all(|e| e.path.len() > 1 || e.node.kind == NodeKind::Dir);
    let (top, added) = match single_top {
        true => (entries[0].path[0].clone(), false),
        false => (fallback_name.as_bytes().to_vec(), true),
    };
    if added {
        for entry in entries.iter_mut() {
            entry.path.insert(0, top.clone());
        }
    }
    let mut summary = Summary::default();
    let mut dirs: BTreeMap<Vec<Vec<u8>>, DirBuild> = BTreeMap::new();
    dirs.entry(vec![top.clone()]).or_default();
    for entry in entries {
        for depth in 1..entry.path.len() {
            dirs.entry(entry.path[..depth].to_vec()).or_default();
        }
        match entry.node.kind {
            NodeKind::Dir => {
                summary.dirs += 1;
                dirs.entry(entry.path).or_default().node = Some(entry.node);
            }
            kind => {
                match kind {
                    NodeKind::Symlink => summary.symlinks += 1,
                    _ => summary.files += 1,
                }
                summary.bytes += entry.node.size;
                let parent = entry.path[..entry.path.len() - 1].to_vec();
                let name = entry.path[entry.path.len() - 1].clone();
                dirs.entry(parent)
                    .or_default()
                    .children
                    .insert(name, entry.node);
            }
        }
    }
    // A file (or symlink) and a directory at one path cannot both be kept.
    for path in dirs.keys().filter(|p| p.len() > 1) {
        let (parent, name) = path.split_at(path.len() - 1);
        if dirs
            .get(parent)
            .is_some_and(|d| d.children.contains_key(&name[0]))
        {
            return Err(Error::bad_input(
                "the tar",
                format!(
                    "it holds {:?} both as a file and as a directory",
                    String::from_utf8_lossy(&path.join(&b'/'))
                ),
            ));
        }
    }
    // Deepest first, so every directory's subtree exists before its parent's tree.
    let mut paths: Vec<Vec<Vec<u8>>> = dirs.keys().cloned().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut top_node = None;
    for path in paths {
        let dir = dirs.remove(&path).expect("listed above");
        let tree = Tree {
            nodes: dir.children.into_values().collect(),
        };
        let bytes = serde_json::to_vec(&tree).expect("trees serialize");
        let subtree = packer.add_async(BlobKind::Tree, &bytes).await?;
        let name = path.last().cloned().unwrap_or_default();
        let mut node = dir.node.unwrap_or_else(|| implied_dir(&name));
        node.name = Name(name.clone());
        node.subtree = Some(subtree);
        match path.len() {
            1 => top_node = Some(node),
            n => {
                dirs.entry(path[..n - 1].to_vec())
                    .or_default()
                    .children
                    .insert(name, node);
            }
        }
    }
    let top_node = top_node.ok_or_else(|| Error::bad_input("the tar", "it holds no entries"))?;
    let root = serde_json::to_vec(&Tree {
        nodes: vec![top_node],
    })
    .expect("trees serialize");
    let root = packer.add_async(BlobKind::Tree, &root).await?;
    Ok((root, top, added, summary))
}

/// A directory the tar has no entry for (its entries imply it).
fn implied_dir(name: &[u8]) -> Node {
    Node {
        name: Name(name.to_vec()),
        kind: NodeKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_ns: 0,
        ctime: 0,
        ctime_ns: 0,
        inode: 0,
        size: 0,
        content: None,
        subtree: None,
        target: None,
    }
}

fn not_dtr(top: &[u8]) -> Error {
    Error::bad_input(
        "the tar",
        format!(
            "not a DTR metadata backup: it should start with dtr-backup-v<version>/, not {:?}",
            String::from_utf8_lossy(top)
        ),
    )
}

/// `dtr-backup-v<version>/rethink/<table>/<row>` files counted by table.
fn dtr_tables(entries: &[Parsed]) -> BTreeMap<String, u64> {
    let mut tables = BTreeMap::new();
    for entry in entries {
        if let [_, rethink, table, _row] = entry.path.as_slice() {
            if rethink == b"rethink" && entry.node.kind == NodeKind::File {
                *tables
                    .entry(String::from_utf8_lossy(table).into_owned())
                    .or_insert(0) += 1;
            }
        }
    }
    tables
}

/// Backs up a tar stream as a snapshot that restores both as a tree and as the exact tar.
/// Nothing is recorded unless the whole stream was a valid tar.
pub async fn backup_tar(
    repo: Arc<Repository>,
    reader: Box<dyn Read + Send>,
    opts: TarOptions,
    progress: Arc<dyn Progress>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let adopted = crate::repo::packer::adopt_unindexed(&repo).await?;
    crate::repo::packer::heal_missing_packs(&repo, progress.as_ref()).await?;
    progress.phase("backup", None);
    let packer = Packer::start(Arc::clone(&repo), opts.pack_size);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let opts_dtr = opts.dtr_metadata;
    let ingested = {
        let (repo, packer, progress, bytes_in) = (
            Arc::clone(&repo),
            Arc::clone(&packer),
            Arc::clone(&progress),
            Arc::clone(&bytes_in),
        );
        runtime::blocking("the tar reader", move || {
            ingest(
                &repo,
                &packer,
                reader,
                opts_dtr,
                progress.as_ref(),
                &bytes_in,
            )
        })
        .await??
    };
    let (dtr_version, tables) = match opts.dtr_metadata {
        false => (None, None),
        true => {
            let top = ingested
                .entries
                .first()
                .map(|e| e.path[0].clone())
                .unwrap_or_default();
            let top = String::from_utf8_lossy(&top).into_owned();
            let version = top.strip_prefix("dtr-backup-v").filter(|v| !v.is_empty());
            let Some(version) = version else {
                return Err(not_dtr(top.as_bytes()));
            };
            (
                Some(version.to_string()),
                Some(dtr_tables(&ingested.entries)),
            )
        }
    };
    let (tree, top, added_top, mut summary) =
        store_trees(&packer, ingested.entries, &opts.fallback_name).await?;
    summary.files_read = summary.files;
    summary.bytes_read = bytes_in.load(Ordering::Relaxed);
    let written = packer.finish().await?;
    summary.new_blobs = written.new_blobs;
    summary.new_bytes = written.new_bytes;
    summary.stored_bytes = written.stored_bytes;
    summary.new_packs = written.new_packs;
    summary.adopted_packs = adopted as u64;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        time,
        host: opts.host,
        source: SourceRef {
            kind: opts.kind,
            uri: opts.uri,
        },
        name: String::from_utf8_lossy(&top).into_owned(),
        replica_id: opts
            .replica_id
            .or_else(|| crate::registry::replica_id(&String::from_utf8_lossy(&top))),
        dtr_version,
        tags: opts.tags,
        parent: None,
        tree,
        summary,
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        original: None,
        repaired_from: None,
        tar: Some(TarLayout {
            skeleton: ingested.skeleton,
            size: ingested.size,
            sha256: ingested.sha256,
            added_top,
        }),
        tables,
    };
    let ids = crate::repo::commit::commit(&repo, vec![snapshot.clone()], &written.relied).await?;
    Ok((ids[0], snapshot))
}

/// `bytes` cut by the repository's chunker.
fn chunk_bytes<'a>(repo: &Repository, bytes: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    let _ = repo
        .chunker()
        .chunk(bytes, bytes.len() as u64, |chunk| -> std::io::Result<()> {
            chunks.push(&bytes[at..at + chunk.len()]);
            at += chunk.len();
            Ok(())
        });
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use rand::{RngCore, SeedableRng};
    use stowage_backends::memory::MemoryStore;
    use stowage_backends::MemoryKv;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_skeleton_stored_in_parts_has_the_chunks_of_the_whole() {
        let store = Arc::new(MemoryStore::new());
        Repository::init(store.as_ref(), b"pw", &InitOptions::default())
            .await
            .expect("init");
        let kv = Arc::new(MemoryKv::new());
        let repo = Arc::new(
            Repository::open(store, b"pw", move |_| Ok(kv))
                .await
                .expect("open"),
        );
        let mut bytes = vec![0u8; 40 << 20];
        rand_chacha::ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut bytes);
        let whole: Vec<Id> = chunk_bytes(&repo, &bytes)
            .iter()
            .map(|c| repo.keys().blob_id(c))
            .collect();
        assert!(whole.len() > 10, "enough chunks to matter");
        let packer = Packer::start(Arc::clone(&repo), 16 << 20);
        let ids = {
            let (repo, packer) = (Arc::clone(&repo), Arc::clone(&packer));
            runtime::blocking("the test sink", move || {
                let mut sink = SkeletonSink {
                    repo: &repo,
                    packer: &packer,
                    buffer: Vec::new(),
                    ids: Vec::new(),
                    flush_at: 9 << 20,
                };
                for piece in bytes.chunks(700_000) {
                    sink.extend(piece).expect("extend");
                }
                sink.store(true).expect("store");
                sink.ids
            })
            .await
            .expect("join")
        };
        packer.finish().await.expect("finish");
        assert_eq!(ids, whole);
    }
}
