//! Turns blobs into packs and packs into durable objects, then records them in index files
//! (FORMAT.md, "Write order"): a pack is stored before any index file names it, and index
//! files are written before the snapshot that needs them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::compress::compress;
use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::encode_index_file;
use crate::pack::{BlobKind, Pack, PackBuilder, PackEntry};
use crate::repo::Repository;

/// Packs stored concurrently.
const UPLOADS: usize = 2;
/// Index files name at most this many blobs.
const INDEX_FILE_ENTRIES: usize = 50_000;

/// The packs the uploader stored, with their entries, and their total size.
type Uploaded = (Vec<(Id, Vec<PackEntry>)>, u64);

/// What the packer added to the repository.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub new_packs: u64,
}

#[derive(Default)]
struct Counters {
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
}

pub struct Packer {
    repo: Arc<Repository>,
    target_size: usize,
    current: Mutex<PackBuilder>,
    /// Blobs added in this run: a blob two files share is packed once.
    claimed: Mutex<HashSet<Id>>,
    tx: mpsc::Sender<Pack>,
    uploader: Mutex<Option<JoinHandle<Result<Uploaded>>>>,
    /// Why the uploader stopped, for the workers whose packs it no longer takes.
    failure: Arc<Mutex<Option<String>>>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Packer {
    /// Starts the uploader; must be called within the tokio runtime.
    pub fn start(repo: Arc<Repository>, target_size: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Pack>(1);
        let store = Arc::clone(repo.store());
        let failure = Arc::new(Mutex::new(None));
        let failure_slot = Arc::clone(&failure);
        let uploader =
            tokio::spawn(async move {
                let packs = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|p| (p, rx))
                });
                let mut stored = Vec::new();
                let mut bytes = 0u64;
                let mut uploads = std::pin::pin!(packs
                    .map(|pack| {
                        let store = Arc::clone(&store);
                        async move {
                            let len = pack.bytes.len() as u64;
                            store
                                .put(&Pack::key(&pack.id), Bytes::from(pack.bytes))
                                .await?;
                            Ok::<_, Error>((pack.id, pack.entries, len))
                        }
                    })
                    .buffer_unordered(UPLOADS));
                while let Some(done) = uploads.next().await {
                    let (id, entries, len) = done.inspect_err(|e| {
                        *lock(&failure_slot) = Some(e.to_string());
                    })?;
                    bytes += len;
                    stored.push((id, entries));
                }
                Ok((stored, bytes))
            });
        Arc::new(Packer {
            current: Mutex::new(PackBuilder::with_capacity(pack_capacity(
                &repo,
                target_size,
            ))),
            repo,
            target_size,
            claimed: Mutex::new(HashSet::new()),
            tx,
            uploader: Mutex::new(Some(uploader)),
            failure,
            counters: Counters::default(),
        })
    }

    /// Whether the blob still needs storing; claims it for the caller when it does.
    fn claim(&self, id: &Id) -> Result<bool> {
        if self.repo.index().contains(id)? {
            return Ok(false);
        }
        Ok(lock(&self.claimed).insert(*id))
    }

    /// Adds a blob unless the repository already has it. Returns its id and, when the
    /// current pack filled up, the finished pack for the caller to [`submit`](Self::submit).
    pub fn add(&self, kind: BlobKind, plain: &[u8]) -> Result<(Id, Option<Pack>)> {
        let id = self.repo.keys().blob_id(plain);
        if !self.claim(&id)? {
            return Ok((id, None));
        }
        let (compression, stored) = compress(plain, self.repo.config().compression_level);
        let sealed = self.repo.keys().seal(&stored);
        self.counters.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .new_bytes
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let full = {
            let mut current = lock(&self.current);
            current.add(kind, id, compression, plain.len(), &sealed);
            if current.len() >= self.target_size {
                let capacity = pack_capacity(&self.repo, self.target_size);
                Some(std::mem::replace(
                    &mut *current,
                    PackBuilder::with_capacity(capacity),
                ))
            } else {
                None
            }
        };
        Ok((id, full.map(|b| b.finish(self.repo.keys()))))
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
        Error::Invalid(format!(
            "storing packs failed: {}",
            why.as_deref().unwrap_or("the uploader stopped")
        ))
    }

    /// Stores a blob from async code (trees): small, so sealed on the caller's thread.
    pub async fn add_async(&self, kind: BlobKind, plain: &[u8]) -> Result<Id> {
        let (id, pack) = self.add(kind, plain)?;
        self.submit(pack).await?;
        Ok(id)
    }

    /// Stores the last pack, waits for every upload, then writes the index files naming
    /// them. After this returns, every blob added is durable and indexed.
    pub async fn finish(self: Arc<Self>) -> Result<Written> {
        let last = std::mem::take(&mut *lock(&self.current));
        if !last.is_empty() {
            self.submit(Some(last.finish(self.repo.keys()))).await?;
        }
        let uploader = lock(&self.uploader).take();
        let Ok(packer) = Arc::try_unwrap(self) else {
            return Err(Error::Invalid("packer finished while still in use".into()));
        };
        drop(packer.tx);
        let (packs, mut stored_bytes) = match uploader {
            Some(handle) => handle
                .await
                .map_err(|e| Error::Invalid(format!("uploader panicked: {e}")))??,
            None => (Vec::new(), 0),
        };
        let new_packs = packs.len() as u64;
        for group in index_groups(packs) {
            let plain = encode_index_file(&group);
            let file = packer.repo.save_sealed("index", &plain).await?;
            stored_bytes += (plain.len() + SEAL_OVERHEAD) as u64;
            packer.repo.index().add(file, &group)?;
        }
        Ok(Written {
            new_blobs: packer.counters.new_blobs.load(Ordering::Relaxed),
            new_bytes: packer.counters.new_bytes.load(Ordering::Relaxed),
            stored_bytes,
            new_packs,
        })
    }
}

/// Room for a full pack, its largest possible last blob and its header, so a pack's buffer
/// is allocated once and never doubled.
fn pack_capacity(repo: &Repository, target_size: usize) -> usize {
    target_size + repo.config().chunker.max as usize + SEAL_OVERHEAD + (64 << 10)
}

/// Splits packs into groups of at most [`INDEX_FILE_ENTRIES`] blobs (a pack is never split).
fn index_groups(packs: Vec<(Id, Vec<PackEntry>)>) -> Vec<Vec<(Id, Vec<PackEntry>)>> {
    let mut groups: Vec<Vec<(Id, Vec<PackEntry>)>> = Vec::new();
    let mut in_group = 0;
    for pack in packs {
        if groups.is_empty() || in_group + pack.1.len() > INDEX_FILE_ENTRIES {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += pack.1.len();
        groups.last_mut().expect("just pushed").push(pack);
    }
    groups
}
