//! Turns blobs into packs and packs into durable objects, and records them in index files
//! as they land (FORMAT.md, "Write order"): a pack is stored before any index file names it,
//! and index files are written before the snapshot that needs them. Index files are written
//! every [`INDEX_EVERY_PACKS`] packs or [`INDEX_EVERY`], so an interrupted run leaves most
//! of its packs indexed and the next run (backup or copy) reuses them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Joined, Result};
use crate::format::compress::{compress, Compression};
use crate::format::crypto::SEAL_OVERHEAD;
use crate::format::id::Id;
use crate::format::index_file::{encode_index_file, INDEX_FILE_ENTRIES};
use crate::format::pack::{BlobKind, Pack, PackBuilder, PackEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::runtime;
use stowage_backends::Upload;

/// Packs stored concurrently.
const UPLOADS: usize = 2;
/// An index file is written once this many stored packs are in none (or sooner, when they
/// hold [`INDEX_FILE_ENTRIES`] blobs).
pub const INDEX_EVERY_PACKS: usize = 32;
/// ... or once the oldest pack no index names was stored this long ago: a backup killed on
/// a slow link loses at most this much upload time.
pub const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// What the uploader stored: packs, and bytes of packs and index files.
#[derive(Debug, Default, Clone)]
struct Uploaded {
    packs: Vec<Id>,
    stored_bytes: u64,
}

/// What the packer added to the repository.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub new_packs: u64,
    /// Every pack holding a blob handed to the packer: the packs it stored and those of the
    /// blobs it found already stored. A snapshot of these blobs relies on these packs.
    pub relied: HashSet<Id>,
}

#[derive(Default)]
struct Counters {
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
}

pub struct Packer {
    repo: Arc<Repository>,
    target_size: usize,
    /// The pack being filled with file content.
    data: Mutex<PackBuilder>,
    /// Trees go to packs of their own, so that reading a snapshot's directories (restore,
    /// ls, the parent of a backup) takes a few large reads instead of one per directory.
    trees: Mutex<PackBuilder>,
    /// Blobs added in this run and not indexed yet: a blob two files share is packed once.
    /// Once an index file names a blob, the index says so and it leaves the set, which so
    /// stays within the blobs of the packs in flight, whatever the run adds in all.
    claimed: Claimed,
    /// Packs of the blobs found already stored.
    relied: Mutex<HashSet<Id>>,
    /// Whether blobs the repository already holds are skipped (all but repacking).
    dedup: bool,
    tx: mpsc::Sender<Pack>,
    uploader: Mutex<Option<JoinHandle<Result<Uploaded>>>>,
    /// Why the uploader stopped, for the workers whose packs it no longer takes.
    failure: Arc<Mutex<Option<String>>>,
    counters: Counters,
    /// The runtime, for [`Packer::add`] on a blocking thread to wait on while a data pack's
    /// upload starts.
    rt: tokio::runtime::Handle,
}

/// A sealed blob on its way into a pack: sealed here, or borrowed from another repository.
struct Blob<'a> {
    kind: BlobKind,
    id: Id,
    compression: Compression,
    raw_length: usize,
    sealed: Cow<'a, [u8]>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stored packs that no index file names yet.
/// The blobs a packer has taken in and no index file names yet.
type Claimed = Arc<Mutex<HashSet<Id>>>;

#[derive(Default)]
struct Unindexed {
    packs: Vec<(Id, Vec<PackEntry>)>,
    blobs: usize,
    /// When the oldest of them was stored.
    since: Option<std::time::Instant>,
}

impl Unindexed {
    /// Writes an index file naming the packs (all durable) and records it in the local
    /// index; their blobs leave `claimed` (the index knows them now). Returns the bytes
    /// stored.
    async fn flush(&mut self, repo: &Repository, claimed: Option<&Claimed>) -> Result<u64> {
        if self.packs.is_empty() {
            return Ok(0);
        }
        let plain = encode_index_file(&self.packs);
        let file = repo.save_sealed("index", &plain).await?;
        repo.index().add(file, &self.packs)?;
        if let Some(claimed) = claimed {
            let mut claimed = lock(claimed);
            for (_, entries) in &self.packs {
                for entry in entries {
                    claimed.remove(&entry.id);
                }
            }
        }
        let packs: Vec<Id> = self.packs.iter().map(|(id, _)| *id).collect();
        repo.index().clear_unindexed(&packs)?;
        *self = Unindexed::default();
        Ok((plain.len() + SEAL_OVERHEAD) as u64)
    }
}

/// Stores the packs coming from `rx`, writing index files as they land and for the rest
/// once `rx` closes. A failure is recorded in `failure` while `rx` is still open, so a
/// worker whose pack is refused always learns why.
async fn upload(
    repo: Arc<Repository>,
    rx: mpsc::Receiver<Pack>,
    failure: Arc<Mutex<Option<String>>>,
    claimed: Option<Claimed>,
) -> Result<Uploaded> {
    let packs =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let uploads = packs
        .map(|pack| {
            let repo = Arc::clone(&repo);
            async move {
                let (id, len, entries) = (pack.id, pack.len, pack.entries.clone());
                // Noted before it is stored: a pack can become visible in the store some
                // time before `put` returns (a directory store syncs the directory after the
                // rename), and a run killed then must still leave the pack to the next one.
                // A note of a pack that never landed is dropped at adoption.
                repo.index().note_unindexed(&id, &entries)?;
                pack.store(repo.store().as_ref()).await?;
                Ok::<_, Error>((id, entries, len))
            }
        })
        .buffer_unordered(UPLOADS);
    let mut uploads = std::pin::pin!(uploads);
    let result = index_as_stored(&repo, &mut uploads, claimed.as_ref()).await;
    if let Err(e) = &result {
        *lock(&failure) = Some(e.to_string());
    }
    result
}

async fn index_as_stored(
    repo: &Repository,
    uploads: &mut (impl futures::Stream<Item = Result<(Id, Vec<PackEntry>, u64)>> + Unpin),
    claimed: Option<&Claimed>,
) -> Result<Uploaded> {
    let mut done = Uploaded::default();
    let mut unindexed = Unindexed::default();
    // Index files are small: writing one holds up the pack uploads only briefly.
    while let Some(stored) = uploads.next().await {
        let (id, entries, len) = stored?;
        done.packs.push(id);
        done.stored_bytes += len;
        if unindexed.blobs + entries.len() > INDEX_FILE_ENTRIES {
            done.stored_bytes += unindexed.flush(repo, claimed).await?;
        }
        unindexed.blobs += entries.len();
        unindexed.packs.push((id, entries));
        let since = *unindexed.since.get_or_insert_with(std::time::Instant::now);
        if unindexed.packs.len() >= INDEX_EVERY_PACKS
            || unindexed.blobs >= INDEX_FILE_ENTRIES
            || since.elapsed() >= INDEX_EVERY
        {
            done.stored_bytes += unindexed.flush(repo, claimed).await?;
        }
    }
    done.stored_bytes += unindexed.flush(repo, claimed).await?;
    Ok(done)
}

impl Packer {
    /// Starts the uploader; must be called within the tokio runtime.
    pub fn start(repo: Arc<Repository>, target_size: usize) -> Arc<Self> {
        Self::start_with(repo, target_size, true)
    }

    /// A packer that stores every blob given once, even those the repository holds: prune
    /// moves blobs out of packs it is about to mark.
    pub fn start_repacking(repo: Arc<Repository>, target_size: usize) -> Arc<Self> {
        Self::start_with(repo, target_size, false)
    }

    fn start_with(repo: Arc<Repository>, target_size: usize, dedup: bool) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Pack>(1);
        let failure = Arc::new(Mutex::new(None));
        let claimed = Claimed::default();
        // A repacking packer takes every blob once, indexed or not: its set stays whole.
        let forgets = dedup.then(|| Arc::clone(&claimed));
        let uploader = tokio::spawn(upload(Arc::clone(&repo), rx, Arc::clone(&failure), forgets));
        Arc::new(Packer {
            data: Mutex::new(PackBuilder::default()),
            trees: Mutex::new(PackBuilder::default()),
            repo,
            target_size,
            claimed,
            relied: Mutex::new(HashSet::new()),
            dedup,
            tx,
            uploader: Mutex::new(Some(uploader)),
            failure,
            counters: Counters::default(),
            rt: runtime::handle(),
        })
    }

    /// Whether the blob still needs storing; claims it for the caller when it does. A blob
    /// whose only copy is in a pack marked by a prune is stored again.
    fn claim(&self, id: &Id) -> Result<bool> {
        if !self.dedup {
            return Ok(lock(&self.claimed).insert(*id));
        }
        if let Some(pack) = self.repo.index().usable(id)? {
            lock(&self.relied).insert(pack);
            return Ok(false);
        }
        Ok(lock(&self.claimed).insert(*id))
    }

    /// Whether every blob of `ids` is stored in a pack a new snapshot may rely on (content
    /// taken over without reading it again); records those packs when so.
    pub fn stored<'a>(&self, ids: impl IntoIterator<Item = &'a Id>) -> Result<bool> {
        let mut packs = Vec::new();
        for id in ids {
            match self.repo.index().usable(id)? {
                Some(pack) => packs.push(pack),
                None => return Ok(false),
            }
        }
        lock(&self.relied).extend(packs);
        Ok(true)
    }

    /// Whether a blob known to be in `pack` may be relied on (the pack is not marked by a
    /// prune nor missing), as [`stored`](Self::stored) says for blobs looked up by id.
    pub fn stored_in(&self, pack: Id) -> bool {
        if !self.repo.index().usable_pack(&pack) {
            return false;
        }
        lock(&self.relied).insert(pack);
        true
    }

    /// Adds a blob unless the repository already has it. Returns its id and, when the
    /// current pack filled up, the finished pack for the caller to [`submit`](Self::submit).
    /// From a blocking thread: starting a new data pack may wait on the store.
    pub fn add(&self, kind: BlobKind, plain: &[u8]) -> Result<(Id, Option<Pack>)> {
        match self.claim_and_seal(kind, plain)? {
            (id, Some(blob)) => Ok((id, self.push_blocking(&blob)?)),
            (id, None) => Ok((id, None)),
        }
    }

    /// The id of `plain` and, unless the repository has it already (or another worker is
    /// storing it), the blob sealed for a pack.
    fn claim_and_seal(&self, kind: BlobKind, plain: &[u8]) -> Result<(Id, Option<Blob<'static>>)> {
        let id = self.repo.keys().blob_id(plain);
        if !self.claim(&id)? {
            return Ok((id, None));
        }
        let (compression, stored) = compress(plain, self.repo.config().compression_level);
        Ok((
            id,
            Some(Blob {
                kind,
                id,
                compression,
                raw_length: plain.len(),
                sealed: Cow::Owned(self.repo.keys().seal(&stored)),
            }),
        ))
    }

    /// Adds a blob that is already compressed and sealed under this repository's keys (read
    /// from a repository that shares them), unless the repository already has it. The
    /// caller has verified that `sealed` opens to a plaintext of `raw_length` bytes with id
    /// `id`. Returns a finished pack for the caller to [`submit`](Self::submit). From a
    /// blocking thread, like [`add`](Self::add).
    pub fn add_sealed(
        &self,
        kind: BlobKind,
        id: Id,
        compression: Compression,
        raw_length: usize,
        sealed: &[u8],
    ) -> Result<Option<Pack>> {
        if !self.claim(&id)? {
            return Ok(None);
        }
        self.push_blocking(&Blob {
            kind,
            id,
            compression,
            raw_length,
            sealed: Cow::Borrowed(sealed),
        })
    }

    /// Appends a claimed blob to the current pack of its kind; returns the pack when it is
    /// full. Packs are written as they fill through the store's upload (a directory store:
    /// a file). `None` when the pack's upload is still to be started: that may wait on the
    /// store, so the caller starts it ([`Packer::start_pack`]) with no lock held, into `upload`,
    /// and comes back. An upload left in `upload` (another blob started the pack in the
    /// meantime) is discarded by the caller.
    fn try_push(
        &self,
        blob: &Blob<'_>,
        upload: &mut Option<Box<dyn Upload>>,
    ) -> Result<Option<Option<Pack>>> {
        let full = {
            let mut current = match blob.kind {
                BlobKind::Data => lock(&self.data),
                BlobKind::Tree => lock(&self.trees),
            };
            // Trees stream to the store too: a registry's tree packs are most of what its
            // initial backup writes, and buffering them took two or three whole packs.
            if current.needs_upload() && upload.is_none() {
                return Ok(None);
            }
            let start = || -> Result<Box<dyn Upload>> {
                upload
                    .take()
                    .ok_or_else(|| Error::bug("a pack started without its upload"))
            };
            current.add(
                start,
                blob.kind,
                blob.id,
                blob.compression,
                blob.raw_length,
                &blob.sealed,
            )?;
            match current.len() >= self.target_size {
                true => Some(std::mem::take(&mut *current)),
                false => None,
            }
        };
        match full {
            Some(builder) => builder.finish(self.repo.keys()).map(Some),
            None => Ok(Some(None)),
        }
    }

    /// The upload of a new pack.
    async fn start_pack(&self) -> Result<Box<dyn Upload>> {
        let size_hint = pack_capacity(&self.repo, self.target_size);
        Ok(self.repo.store().start_upload("data", size_hint).await?)
    }

    fn count(&self, blob: &Blob<'_>) {
        self.counters.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .new_bytes
            .fetch_add(blob.raw_length as u64, Ordering::Relaxed);
    }

    /// [`Packer::try_push`] until the blob is in, from async code.
    async fn push(&self, blob: &Blob<'_>) -> Result<Option<Pack>> {
        self.count(blob);
        let mut upload = None;
        loop {
            if let Some(full) = self.try_push(blob, &mut upload)? {
                return Ok(full);
            }
            upload = Some(self.start_pack().await?);
        }
    }

    /// [`Packer::try_push`] until the blob is in, from a blocking thread.
    fn push_blocking(&self, blob: &Blob<'_>) -> Result<Option<Pack>> {
        self.count(blob);
        let mut upload = None;
        loop {
            if let Some(full) = self.try_push(blob, &mut upload)? {
                return Ok(full);
            }
            upload = Some(runtime::wait(&self.rt, self.start_pack())?);
        }
    }

    /// Hands a finished pack to the uploader, waiting while it is busy (from a blocking
    /// thread).
    pub fn submit_blocking(&self, pack: Option<Pack>) -> Result<()> {
        match pack {
            Some(pack) => self
                .tx
                .blocking_send(pack)
                .map_err(|_| self.uploader_gone()),
            None => Ok(()),
        }
    }

    /// Hands a finished pack to the uploader (from async code).
    pub async fn submit(&self, pack: Option<Pack>) -> Result<()> {
        match pack {
            Some(pack) => self.tx.send(pack).await.map_err(|_| self.uploader_gone()),
            None => Ok(()),
        }
    }

    fn uploader_gone(&self) -> Error {
        let why = lock(&self.failure).clone();
        Error::io(
            "storing packs",
            std::io::Error::other(why.unwrap_or_else(|| "the uploader stopped".into())),
        )
    }

    /// Stores a blob from async code (trees): small, so sealed on the caller's thread.
    pub async fn add_async(&self, kind: BlobKind, plain: &[u8]) -> Result<Id> {
        let blob = match self.claim_and_seal(kind, plain)? {
            (_, Some(blob)) => blob,
            (id, None) => return Ok(id),
        };
        let pack = self.push(&blob).await?;
        self.submit(pack).await?;
        Ok(blob.id)
    }

    /// Stores the last pack, waits for every upload, and indexes the packs not yet in an
    /// index file. After this returns, every blob added is durable and indexed.
    pub async fn finish(self: Arc<Self>) -> Result<Written> {
        for builder in [&self.data, &self.trees] {
            let last = std::mem::take(&mut *lock(builder));
            self.submit(last.finish(self.repo.keys())?).await?;
        }
        let Ok(packer) = Arc::try_unwrap(self) else {
            return Err(Error::bug("packer finished while still in use"));
        };
        let uploader = lock(&packer.uploader).take();
        let new_blobs = packer.counters.new_blobs.load(Ordering::Relaxed);
        let new_bytes = packer.counters.new_bytes.load(Ordering::Relaxed);
        let mut relied = std::mem::take(&mut *lock(&packer.relied));
        // Closes the channel: the uploader stores what it holds, indexes it and returns.
        drop(packer);
        let uploaded = match uploader {
            Some(handle) => handle.await.joined("the pack uploader")??,
            None => Uploaded::default(),
        };
        relied.extend(uploaded.packs.iter().copied());
        Ok(Written {
            new_blobs,
            new_bytes,
            stored_bytes: uploaded.stored_bytes,
            new_packs: uploaded.packs.len() as u64,
            relied,
        })
    }
}

impl Drop for Packer {
    /// A packer dropped without [`finish`](Self::finish) (its job failed) stops uploading:
    /// nothing it would still write is needed, and nothing is left running behind the
    /// failed job.
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.uploader).take() {
            handle.abort();
        }
    }
}

/// Finds the packs the index names that the store lacks (deleted, lost with a disk), so that
/// a run that writes snapshots stores their blobs again instead of relying on them
/// ([`Index::usable_pack`]): the new snapshots are whole, and, blobs being named by their
/// content, so are the older ones that needed those blobs. Called beside
/// [`adopt_unindexed`] by every pipeline that writes snapshots.
///
/// [`Index::usable_pack`]: crate::repo::index::Index::usable_pack
pub async fn heal_missing_packs(repo: &Repository, progress: &dyn Progress) -> Result<()> {
    let stored = Pack::list_stored(repo.store().as_ref()).await?;
    let missing: HashSet<Id> = repo
        .index()
        .packs()?
        .into_iter()
        .filter(|p| !stored.contains_key(p))
        .collect();
    if !missing.is_empty() {
        progress.warn(&format!(
            "{} pack(s) the index names are missing from the repository; this run stores \
             their blobs again (run `stowage check` to see which older snapshots they break)",
            missing.len()
        ));
    }
    repo.index().set_missing(missing);
    Ok(())
}

/// Indexes the packs a killed run on this host stored but never indexed (noted in the local
/// cache), so this run reuses them instead of storing their blobs again. Packs that are gone
/// or marked by a prune, and packs whose bytes are not what was noted, are skipped. Returns
/// how many packs were adopted.
pub async fn adopt_unindexed(repo: &Repository) -> Result<usize> {
    let noted = repo.index().unindexed()?;
    if noted.is_empty() {
        return Ok(0);
    }
    let mut adopt = Vec::new();
    for (pack, entries) in &noted {
        let indexed = match entries.first() {
            Some(first) => repo.index().lookup(&first.id)?.map(|l| l.pack) == Some(*pack),
            None => true,
        };
        if indexed || repo.index().is_marked(pack) {
            continue;
        }
        // Adopted only if it is whole and what the note says: its bytes hash to its id and
        // its header lists the noted blobs. Anything else is left to prune as unindexed.
        match repo.store().get(&Pack::key(pack)).await {
            Ok(bytes) => {
                let header = crate::format::pack::verified_header(repo.keys(), pack, &bytes);
                if header.is_ok_and(|h| h == *entries) {
                    adopt.push((*pack, entries.clone()));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut unindexed = Unindexed {
        blobs: adopt.iter().map(|(_, e)| e.len()).sum(),
        packs: adopt,
        since: None,
    };
    let adopted = unindexed.packs.len();
    unindexed.flush(repo, None).await?;
    let all: Vec<Id> = noted.iter().map(|(id, _)| *id).collect();
    repo.index().clear_unindexed(&all)?;
    Ok(adopted)
}

/// Room for a full pack, its largest possible last blob and its header, so a pack's buffer
/// is allocated once and never doubled.
fn pack_capacity(repo: &Repository, target_size: usize) -> usize {
    target_size + repo.config().chunker.max as usize + SEAL_OVERHEAD + (64 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use stowage_backends::memory::MemoryStore;
    use stowage_backends::{MemoryKv, Store};

    async fn repo() -> (Arc<MemoryStore>, Arc<Repository>) {
        let store = Arc::new(MemoryStore::new());
        Repository::init(store.as_ref(), b"pw", &InitOptions::default())
            .await
            .expect("init");
        let kv = Arc::new(MemoryKv::new());
        let repo = Repository::open(store.clone(), b"pw", move |_| Ok(kv))
            .await
            .expect("open");
        (store, Arc::new(repo))
    }

    #[tokio::test]
    async fn index_files_are_written_every_32_packs_and_at_the_end() {
        let (store, repo) = repo().await;
        // One blob per pack.
        let packer = Packer::start(Arc::clone(&repo), 1);
        for n in 0..70u32 {
            packer
                .add_async(BlobKind::Data, &n.to_le_bytes())
                .await
                .expect("add");
        }
        let written = packer.finish().await.expect("finish");
        assert_eq!((written.new_packs, written.new_blobs), (70, 70));
        assert_eq!(written.relied.len(), 70);
        let files = store.list("index/").await.expect("list");
        assert_eq!(files.len(), 3, "32 + 32 + the last 6");
        let indexed: u64 = files.iter().map(|f| f.size).sum();
        assert_eq!(
            written.stored_bytes,
            indexed
                + store
                    .list("data/")
                    .await
                    .expect("list")
                    .iter()
                    .map(|f| f.size)
                    .sum::<u64>()
        );
        for n in 0..70u32 {
            assert_eq!(
                repo.read_blob(&repo.keys().blob_id(&n.to_le_bytes()))
                    .await
                    .expect("read"),
                n.to_le_bytes()
            );
        }
    }

    #[tokio::test]
    async fn sealed_blobs_are_stored_as_they_are_and_once() {
        let (_store, repo) = repo().await;
        let plain = b"a blob from a repository with the same keys".repeat(10);
        let id = repo.keys().blob_id(&plain);
        let (compression, stored) = compress(&plain, 3);
        let sealed = repo.keys().seal(&stored);
        let packer = Packer::start(Arc::clone(&repo), 16 << 20);
        for _ in 0..2 {
            // From a blocking thread, as copy and prune call it.
            let (packer2, sealed, raw_length) = (Arc::clone(&packer), sealed.clone(), plain.len());
            let full = tokio::task::spawn_blocking(move || {
                packer2.add_sealed(BlobKind::Data, id, compression, raw_length, &sealed)
            })
            .await
            .expect("join")
            .expect("add");
            packer.submit(full).await.expect("submit");
        }
        let written = packer.finish().await.expect("finish");
        assert_eq!(
            (written.new_blobs, written.new_bytes),
            (1, plain.len() as u64)
        );
        assert_eq!(repo.read_blob(&id).await.expect("read"), plain);
        let loc = repo.index().lookup(&id).expect("lookup").expect("indexed");
        assert_eq!(loc.entry.length as usize, sealed.len());
    }
}
