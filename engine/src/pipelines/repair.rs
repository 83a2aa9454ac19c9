//! The repair pipelines, for damage `check` names:
//!
//! - `repair index`: every stored pack's header (packs describe themselves) -> new index
//!   files naming the packs that read -> the old index files removed -> the local cache
//!   rebuilt. With `read_data`, every blob is authenticated too; those of a damaged pack that
//!   still do move to new packs, and the damaged pack leaves the index (prune removes it).
//! - `repair snapshots`: every snapshot's trees, with the blobs that are in no stored pack
//!   -> new trees without the lost files (a lost directory becomes an empty one) -> new
//!   snapshots, committed like a backup's -> with `forget`, the originals removed, and the
//!   snapshots that cannot be repaired too.
//!
//! Neither deletes a pack: what a repair leaves unindexed stays until a prune, so a copy of
//! the old state is kept while the repair is judged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::id::Id;
use crate::format::index_file::{encode_index_file, INDEX_FILE_ENTRIES};
use crate::format::pack::{read_header, Pack, PackEntry};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::progress::Progress;
use crate::repo::index::{list_index_files, Location};
use crate::repo::packer::Packer;
use crate::repo::Repository;
use crate::runtime;

/// Packs read at once.
const READS: usize = 8;
/// The tag a repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// What `repair index` found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairIndexReport {
    /// Packs in the repository.
    pub packs: usize,
    /// Packs the new index names, and their blobs.
    pub indexed_packs: usize,
    pub indexed_blobs: usize,
    /// Packs a prune marked for deletion: left out, as the prune will delete them.
    pub marked_packs: usize,
    /// Packs whose header cannot be read (cut short, damaged): left out of the index, each
    /// with the reason. Their blobs are lost unless copies exist.
    pub unreadable: Vec<(Id, String)>,
    /// With `read_data`: packs with blobs that do not authenticate. The blobs that do were
    /// stored again in new packs; the pack is left out of the index.
    pub damaged: Vec<(Id, String)>,
    /// Blobs saved out of damaged packs, and blobs lost with them.
    pub salvaged_blobs: usize,
    pub lost_blobs: usize,
    /// Packs the old index named that the repository no longer has.
    pub missing: Vec<Id>,
    pub index_files_written: usize,
    pub index_files_removed: usize,
}

/// How one pack read.
enum Verdict {
    Good(Vec<PackEntry>),
    /// Header readable; some blobs do not authenticate. The good ones, sealed.
    Damaged {
        reason: String,
        good: Vec<(PackEntry, Vec<u8>)>,
        lost: usize,
    },
    Unreadable(String),
}

/// Rebuilds the index from the packs' own headers (see the module's notes).
pub async fn repair_index(
    repo: Arc<Repository>,
    read_data: bool,
    progress: Arc<dyn Progress>,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    // Index files first: one written after this listing (a backup running meanwhile) names
    // packs stored after the listing below may see, and is kept.
    let old_files = list_index_files(repo.store().as_ref()).await?;
    let packs = Pack::list_stored(repo.store().as_ref()).await?;
    report.packs = packs.len();
    report.missing = {
        let mut missing: Vec<Id> = repo
            .index()
            .packs()?
            .into_iter()
            .filter(|p| !packs.contains_key(p))
            .collect();
        missing.sort();
        missing
    };
    let mut to_read: Vec<(Id, u64)> = packs.into_iter().collect();
    to_read.sort();
    let before = to_read.len();
    to_read.retain(|(pack, _)| !repo.index().is_marked(pack));
    report.marked_packs = before - to_read.len();

    progress.phase(
        "repair index",
        Some(to_read.iter().map(|(_, size)| size).sum()),
    );
    let salvage = Packer::start_repacking(Arc::clone(&repo), 16 << 20);
    let mut pending: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut pending_blobs = 0;
    let mut reads = futures::stream::iter(to_read)
        .map(|(pack, size)| {
            let repo = Arc::clone(&repo);
            async move { (pack, size, read_pack(repo, pack, size, read_data).await) }
        })
        .buffer_unordered(READS);
    while let Some((pack, size, verdict)) = reads.next().await {
        progress.advance(size);
        match verdict? {
            Verdict::Good(entries) => {
                report.indexed_packs += 1;
                report.indexed_blobs += entries.len();
                pending_blobs += entries.len();
                pending.push((pack, entries));
                if pending_blobs >= INDEX_FILE_ENTRIES {
                    write_index_file(&repo, &mut pending, &mut report).await?;
                    pending_blobs = 0;
                }
            }
            Verdict::Damaged { reason, good, lost } => {
                progress.warn(&format!(
                    "pack {pack} is damaged ({reason}): {} blob(s) still authenticate and are \
                     stored again, {lost} are lost",
                    good.len()
                ));
                report.salvaged_blobs += good.len();
                report.lost_blobs += lost;
                report.damaged.push((pack, reason));
                let salvage = Arc::clone(&salvage);
                runtime::blocking("storing salvaged blobs", move || {
                    for (entry, sealed) in good {
                        let full = salvage.add_sealed(
                            entry.kind,
                            entry.id,
                            entry.compression,
                            entry.raw_length as usize,
                            &sealed,
                        )?;
                        salvage.submit_blocking(full)?;
                    }
                    Ok::<_, Error>(())
                })
                .await??;
            }
            Verdict::Unreadable(reason) => {
                progress.warn(&format!(
                    "pack {pack} is left out of the index: {reason}; its blobs are lost unless \
                     copies exist"
                ));
                report.unreadable.push((pack, reason));
            }
        }
    }
    drop(reads);
    write_index_file(&repo, &mut pending, &mut report).await?;
    salvage.finish().await?;

    // Only now that the new files are durable do the old ones go: a repair killed before
    // leaves both, which index the same packs.
    for id in &old_files {
        match repo.store().delete(&format!("index/{id}")).await {
            Ok(()) => report.index_files_removed += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // An index file went away: the cache is rebuilt from the new ones.
    repo.index()
        .sync(repo.store().as_ref(), repo.keys())
        .await?;
    Ok(report)
}

async fn write_index_file(
    repo: &Repository,
    packs: &mut Vec<(Id, Vec<PackEntry>)>,
    report: &mut RepairIndexReport,
) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    repo.save_sealed("index", &encode_index_file(packs)).await?;
    report.index_files_written += 1;
    packs.clear();
    Ok(())
}

/// Reads a pack's header (from its end) or, with `read_data`, the whole pack and every blob.
async fn read_pack(repo: Arc<Repository>, pack: Id, size: u64, read_data: bool) -> Result<Verdict> {
    let key = Pack::key(&pack);
    let unreadable = |e: Error| Ok(Verdict::Unreadable(e.to_string()));
    if !read_data {
        return match repo.read_pack_header(&pack, Some(size)).await {
            Ok(entries) => Ok(Verdict::Good(entries)),
            Err(e) if e.kind() == ErrorKind::Damaged => unreadable(e),
            Err(e) => Err(e),
        };
    }
    let bytes = repo.store().get(&key).await?;
    runtime::blocking("a pack verifier", move || {
        let entries = match read_header(repo.keys(), &pack, &bytes) {
            Ok(entries) => entries,
            Err(e) => return unreadable(e),
        };
        let mut good = Vec::with_capacity(entries.len());
        let mut reason = None;
        for entry in &entries {
            let loc = Location {
                pack,
                entry: *entry,
            };
            let sealed = &bytes[entry.range().start as usize..entry.range().end as usize];
            match repo.decode_blob(&entry.id, &loc, sealed) {
                Ok(_) => good.push((*entry, sealed.to_vec())),
                Err(e) => reason = reason.or(Some(e.to_string())),
            }
        }
        Ok(match reason {
            None => Verdict::Good(entries),
            Some(reason) => Verdict::Damaged {
                reason,
                lost: entries.len() - good.len(),
                good,
            },
        })
    })
    .await?
}

/// One snapshot `repair snapshots` found needing lost blobs.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub snapshot: Id,
    /// The repaired snapshot written in its place (none on a dry run, or when it cannot be
    /// repaired).
    pub repaired: Option<Id>,
    /// Paths (from the snapshot's top directory) of the files and directories lost: a
    /// directory ends in `/` and is kept, empty.
    pub lost: Vec<String>,
    /// Why it cannot be repaired, when it cannot.
    pub unrepairable: Option<String>,
    /// Removed (`forget`).
    pub removed: bool,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots looked at.
    pub snapshots: usize,
    /// Those needing lost blobs, oldest first.
    pub repaired: Vec<RepairedSnapshot>,
    /// `snapshots/` objects that do not authenticate or parse, and whether they were
    /// removed (`forget`).
    pub damaged: Vec<Id>,
    pub damaged_removed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RepairSnapshotsOptions {
    /// Say what would be done; write and remove nothing.
    pub dry_run: bool,
    /// Remove the snapshots repaired (their repaired copies stay), those that cannot be,
    /// and `snapshots/` objects that do not load.
    pub forget: bool,
}

/// Rewrites the snapshots whose trees need blobs in no stored pack (see the module's notes).
pub async fn repair_snapshots(
    repo: Arc<Repository>,
    opts: RepairSnapshotsOptions,
    progress: Arc<dyn Progress>,
) -> Result<RepairSnapshotsReport> {
    let list = repo.snapshot_list().await?;
    let mut report = RepairSnapshotsReport {
        snapshots: list.snapshots.len(),
        damaged: list.damaged.iter().map(|d| d.id).collect(),
        ..RepairSnapshotsReport::default()
    };
    let stored = Pack::list_stored(repo.store().as_ref()).await?;
    let packer = (!opts.dry_run).then(|| Packer::start(Arc::clone(&repo), 16 << 20));
    let mut fixer = Fixer {
        repo: &repo,
        stored,
        packer: packer.clone(),
        seen: HashMap::new(),
        relied: HashSet::new(),
    };
    progress.phase("repair snapshots", Some(list.snapshots.len() as u64));
    let mut rewritten: Vec<Snapshot> = Vec::new();
    for (id, snap) in &list.snapshots {
        let found = fixer.snapshot(snap).await?;
        progress.advance(1);
        let Some((tree, lost, unrepairable)) = found else {
            continue;
        };
        if let (Some(tree), None) = (tree, &unrepairable) {
            let mut repaired = snap.clone();
            repaired.tree = tree;
            repaired.repaired_from = Some(*id);
            if !repaired.tags.iter().any(|t| t == REPAIRED_TAG) {
                repaired.tags.push(REPAIRED_TAG.to_string());
            }
            rewritten.push(repaired);
        }
        report.repaired.push(RepairedSnapshot {
            snapshot: *id,
            repaired: None,
            lost,
            unrepairable,
            removed: false,
        });
    }
    let Some(packer) = packer else {
        return Ok(report);
    };
    let relied = std::mem::take(&mut fixer.relied);
    drop(fixer);
    let mut written = packer.finish().await?;
    written.relied.extend(relied);
    let ids = crate::repo::commit::commit(&repo, rewritten, &written.relied).await?;
    let mut ids = ids.into_iter();
    for entry in &mut report.repaired {
        if entry.unrepairable.is_none() {
            entry.repaired = ids.next();
        }
    }
    if opts.forget {
        for entry in &mut report.repaired {
            crate::pipelines::forget::remove(&repo, &[entry.snapshot]).await?;
            entry.removed = true;
        }
        crate::pipelines::forget::remove(&repo, &report.damaged).await?;
        report.damaged_removed = !report.damaged.is_empty();
    }
    Ok(report)
}

/// A tree looked at: kept as it is, or rewritten without what is lost.
#[derive(Clone)]
enum Fixed {
    Intact,
    /// Its replacement, and the paths lost under it (relative to it).
    Rewritten(Id, Arc<Vec<String>>),
    /// It cannot be read itself, and why.
    Lost(String),
}

/// Rewrites trees without the blobs no stored pack holds.
struct Fixer<'a> {
    repo: &'a Repository,
    /// The packs in the store, with their sizes.
    stored: HashMap<Id, u64>,
    /// None on a dry run: nothing is written.
    packer: Option<Arc<Packer>>,
    /// Trees already looked at (snapshots share most of theirs).
    seen: HashMap<Id, Fixed>,
    /// The packs holding the blobs of the trees kept: a repaired snapshot relies on them.
    relied: HashSet<Id>,
}

impl Fixer<'_> {
    /// The pack holding a copy of `blob` that can be read: indexed, stored, long enough.
    fn readable(&self, blob: &Id) -> Result<Option<Id>> {
        Ok(self.repo.index().lookup(blob)?.and_then(|loc| {
            let size = *self.stored.get(&loc.pack)?;
            (loc.entry.range().end <= size).then_some(loc.pack)
        }))
    }

    /// For a snapshot needing lost blobs: its new root tree (none on a dry run), the paths
    /// lost, and why it cannot be repaired when it cannot. None when it is whole.
    async fn snapshot(
        &mut self,
        snap: &Snapshot,
    ) -> Result<Option<(Option<Id>, Vec<String>, Option<String>)>> {
        let mut lost_extra = Vec::new();
        for blob in snap.extra_blobs() {
            match self.readable(blob)? {
                Some(pack) => {
                    self.relied.insert(pack);
                }
                None => lost_extra.push(*blob),
            }
        }
        let fixed = self.tree(snap.tree).await?;
        let (tree, lost) = match fixed {
            Fixed::Intact if lost_extra.is_empty() => return Ok(None),
            Fixed::Intact => (Some(snap.tree), Vec::new()),
            Fixed::Rewritten(id, lost) => (Some(id), lost.to_vec()),
            Fixed::Lost(why) => {
                let why = format!("its top tree is lost ({why}): nothing of it is left");
                return Ok(Some((None, vec!["/".into()], Some(why))));
            }
        };
        let unrepairable = match (&snap.tar, lost_extra.first()) {
            (Some(_), Some(blob)) => Some(format!(
                "the tar's skeleton needs blob {blob}, which is lost: the tar cannot be rebuilt"
            )),
            (Some(_), None) => {
                Some("a tar snapshot rebuilds one exact tar, which needs every entry".to_string())
            }
            (None, _) => None,
        };
        let tree = tree.filter(|_| self.packer.is_some());
        Ok(Some((tree, lost, unrepairable)))
    }

    /// Looks at a tree and everything under it, rewriting what needs lost blobs.
    fn tree(&mut self, id: Id) -> BoxFuture<'_, Result<Fixed>> {
        async move {
            if let Some(fixed) = self.seen.get(&id) {
                return Ok(fixed.clone());
            }
            let fixed = self.look_at(id).await?;
            self.seen.insert(id, fixed.clone());
            Ok(fixed)
        }
        .boxed()
    }

    async fn look_at(&mut self, id: Id) -> Result<Fixed> {
        let Some(pack) = self.readable(&id)? else {
            return Ok(Fixed::Lost(format!("tree {id} is in no stored pack")));
        };
        let tree = match self.repo.load_tree(&id).await {
            Ok(tree) => tree,
            Err(e) if e.kind() == ErrorKind::Damaged => return Ok(Fixed::Lost(e.to_string())),
            Err(e) => return Err(e),
        };
        self.relied.insert(pack);
        let mut lost = Vec::new();
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for mut node in tree.nodes {
            let name = node.name.lossy();
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                match self.tree(sub).await? {
                    Fixed::Intact => {}
                    Fixed::Rewritten(new, under) => {
                        node.subtree = Some(new);
                        lost.extend(under.iter().map(|p| format!("{name}/{p}")));
                        changed = true;
                    }
                    Fixed::Lost(_) => {
                        node.subtree = Some(self.store_tree(&Tree { nodes: vec![] }).await?);
                        lost.push(format!("{name}/"));
                        changed = true;
                    }
                }
                nodes.push(node);
                continue;
            }
            if self.blobs_readable(&node)? {
                nodes.push(node);
            } else {
                lost.push(name);
                changed = true;
            }
        }
        if !changed {
            return Ok(Fixed::Intact);
        }
        let new = self.store_tree(&Tree { nodes }).await?;
        Ok(Fixed::Rewritten(new, Arc::new(lost)))
    }

    /// Whether every blob of a file's content is readable; notes their packs.
    fn blobs_readable(&mut self, node: &Node) -> Result<bool> {
        let mut packs = Vec::new();
        for blob in node.blobs() {
            match self.readable(blob)? {
                Some(pack) => packs.push(pack),
                None => return Ok(false),
            }
        }
        self.relied.extend(packs);
        Ok(true)
    }

    /// Stores a new tree; on a dry run, only names it.
    async fn store_tree(&self, tree: &Tree) -> Result<Id> {
        let bytes = serde_json::to_vec(tree).expect("trees serialize");
        match &self.packer {
            Some(packer) => {
                packer
                    .add_async(crate::format::pack::BlobKind::Tree, &bytes)
                    .await
            }
            None => Ok(self.repo.keys().blob_id(&bytes)),
        }
    }
}
