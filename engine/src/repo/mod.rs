//! A repository on a [`Store`]: opening and creating it, its local cache and index, and the
//! steps every pipeline shares: the packer that writes packs as they fill, the commit that
//! writes index files and snapshots in the order FORMAT.md ("Write order") demands, Object
//! Lock retention, what snapshots reach, the one verified [`reader`] and the tree [`walk`].
//!
//! May use: `format`, `gzip` (the reader re-creates gzip content), the `Store` and `KvStore`
//! traits. Never a pipeline, the registry layout or a concrete backend.

pub mod commit;
mod headers;
pub mod index;
pub mod keys;
pub mod marks;
pub mod object_lock;
pub mod packer;
pub mod reach;
pub mod reader;
pub mod walk;
mod windows;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stowage_backends::{KvStore, Store};

use crate::error::{Error, ErrorKind, Result};
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::compress::decompress;
pub use crate::format::config::{Config, FORMAT_VERSION};
use crate::format::crypto::{KeyFile, Keys, RawKeys};
use crate::format::id::Id;
use crate::format::pack::{Pack, PackEntry};
use crate::format::snapshot::{self, Snapshot, SnapshotFilter};
use crate::format::tree::Tree;
use crate::runtime;
use index::{Index, Location};
use windows::{window_for, PackWindows};

/// Parameters of a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub host: String,
    pub gzip: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: 3,
            host: "localhost".into(),
            gzip: false,
        }
    }
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn Store>,
    keys: Keys,
    /// The name (under `keys/`) of the key file that opened the repository.
    key_name: String,
    config: Config,
    /// BLAKE3 of the config object's bytes, which key files are bound to.
    config_hash: Id,
    index: Index,
    tree_windows: PackWindows,
    tree_headers: headers::PackHeaders,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Repository({}, {})",
            self.store.describe(),
            self.config.id
        )
    }
}

impl Repository {
    /// Creates a repository in an empty store, with fresh master keys.
    pub async fn init(store: &dyn Store, password: &[u8], opts: &InitOptions) -> Result<Config> {
        let (_, raw) = RawKeys::generate();
        Self::create(store, password, opts, &raw).await
    }

    /// Creates a repository in an empty store that shares `source`'s master keys, chunker
    /// parameters, compression level and gzip setting, so both give the same blob ids and
    /// chunk boundaries and `copy` moves sealed blobs between them as they are. The key file is new (under
    /// `password`) and so is the repository id: the two keep separate local caches.
    pub async fn init_from(
        store: &dyn Store,
        password: &[u8],
        host: &str,
        source: &Repository,
    ) -> Result<Config> {
        let opts = InitOptions {
            chunker: source.config.chunker,
            compression_level: source.config.compression_level,
            host: host.to_string(),
            gzip: source.config.gzip,
        };
        Self::create(store, password, &opts, &source.keys.raw()).await
    }

    async fn create(
        store: &dyn Store,
        password: &[u8],
        opts: &InitOptions,
        raw: &RawKeys,
    ) -> Result<Config> {
        opts.chunker.validate().map_err(Error::Usage)?;
        match store.head("config").await {
            Ok(_) => return Err(Error::AlreadyExists(store.describe())),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // A repository that lost its config still holds data only its old keys open: a new
        // config and key there would leave it unreadable for good.
        for dir in ["keys", "snapshots", "index", "data"] {
            let found = store.list(&format!("{dir}/")).await?;
            if !found.is_empty() {
                return Err(Error::Usage(format!(
                    "{} holds repository objects ({} under {dir}/) but no config: it is a \
                     damaged repository, not an empty location; put its config back from a \
                     copy, or init in an empty location",
                    store.describe(),
                    found.len()
                )));
            }
        }
        let config = Config {
            version: FORMAT_VERSION,
            id: Id::random().to_hex(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            encryption: "aes-256-gcm".into(),
            created: Utc::now(),
            gzip: opts.gzip,
        };
        let config_bytes = config.to_json();
        let key_file = KeyFile::wrap(raw, Id::hash_of(&config_bytes), password, &opts.host)?;
        // The key first: a config without a key would be a repository nobody can open.
        let key_json = key_file.to_json();
        store
            .put(&format!("keys/{}", Id::random()), key_json.into())
            .await?;
        store.put("config", config_bytes.into()).await?;
        Ok(config)
    }

    async fn read_config(store: &dyn Store) -> Result<(Config, Id)> {
        let bytes = store.get("config").await.map_err(|e| match e {
            e if e.is_not_found() => Error::NoRepository {
                location: store.describe(),
                detail: "it has no config object".into(),
            },
            e => e.into(),
        })?;
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt("config", format!("not a stowage config: {e}")))?;
        if version.version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version.version,
                supported: FORMAT_VERSION,
            });
        }
        let config: Config =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("config", e.to_string()))?;
        config
            .chunker
            .validate()
            .map_err(|e| Error::corrupt("config", e))?;
        Ok((config, Id::hash_of(&bytes)))
    }

    /// Opens a repository with `password`; `cache` gives the local cache for the repository
    /// id it is called with.
    pub async fn open(
        store: Arc<dyn Store>,
        password: &[u8],
        cache: impl FnOnce(&str) -> Result<Arc<dyn KvStore>> + Send + 'static,
    ) -> Result<Self> {
        let (config, config_hash) = Self::read_config(store.as_ref()).await?;
        // The local cache opens (RocksDB: tens of ms) while the key is derived.
        let id = config.id.clone();
        let cache = runtime::blocking("opening the cache", move || cache(&id));
        let keys = Self::unlock(store.as_ref(), password, config_hash).await;
        let cache = cache.await?;
        let (keys, key_name) = keys?;
        let index = Index::new(cache?);
        index.sync(store.as_ref(), &keys).await?;
        for (id, why) in index.damaged() {
            tracing::warn!(
                "index file {id} is damaged and left out ({why}); `stowage check` tells what \
                 it affects"
            );
        }
        Ok(Repository {
            store,
            keys,
            key_name,
            config,
            config_hash,
            index,
            tree_windows: PackWindows::default(),
            tree_headers: headers::PackHeaders::default(),
        })
    }

    /// The repository's keys, from the first key file the password opens, and that file's
    /// name. Key files that do not parse (damage, a stray file) are skipped with a warning
    /// while another opens.
    async fn unlock(store: &dyn Store, password: &[u8], config_hash: Id) -> Result<(Keys, String)> {
        let key_objects = store.list("keys/").await?;
        let mut mismatch = None;
        let mut damaged = Vec::new();
        for meta in &key_objects {
            let bytes = store.get(&meta.key).await?;
            let file: KeyFile = match serde_json::from_slice(&bytes) {
                Ok(file) => file,
                Err(e) => {
                    damaged.push(Error::corrupt(
                        meta.key.clone(),
                        format!("not a key file: {e}"),
                    ));
                    continue;
                }
            };
            let password = password.to_vec();
            let opened = runtime::blocking("key derivation", move || {
                file.unwrap(&password, config_hash)
            })
            .await?;
            match opened {
                Ok(Some(keys)) => {
                    for e in &damaged {
                        tracing::warn!("{e}; skipped (another key file opened the repository)");
                    }
                    let name = meta.key.strip_prefix("keys/").unwrap_or(&meta.key);
                    return Ok((keys, name.to_string()));
                }
                Ok(None) => {}
                // A key for another config (left by an `init` that failed before writing
                // its config): not this repository's key; another one may open.
                Err(e @ Error::Corrupt { .. }) => mismatch = Some(e),
                Err(e) => return Err(e),
            }
        }
        let readable = key_objects.len() - damaged.len();
        match (readable, damaged.pop()) {
            // Nothing the password could be tried on.
            (0, Some(e)) => Err(e),
            _ => Err(mismatch.unwrap_or(Error::WrongPassword { keys: readable })),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.keys.chunker_seed())
    }

    /// Decrypts, decompresses and verifies a blob read from `loc`.
    pub fn decode_blob(&self, id: &Id, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        self.decode_blob_into(id, loc, sealed, &mut plain)?;
        Ok(plain)
    }

    /// [`Repository::decode_blob`] into `plain` (replacing what it held): a restore decodes
    /// thousands of blobs into one buffer. Uncompressed blobs (gzip layers, most of a
    /// registry) are opened in place there; a zstd blob still decompresses into a new one.
    pub fn decode_blob_into(
        &self,
        id: &Id,
        loc: &Location,
        sealed: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<()> {
        let what = || format!("blob {id} in pack {}", loc.pack);
        self.keys.open_into(sealed, what, plain)?;
        *plain = decompress(
            loc.entry.compression,
            std::mem::take(plain),
            loc.entry.raw_length as usize,
            what,
        )?;
        if self.keys.blob_id(plain) != *id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
        Ok(())
    }

    pub async fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.index.lookup(id)?.ok_or(Error::MissingBlob(*id))?;
        let sealed = self
            .store
            .get_range(&Pack::key(&loc.pack), loc.entry.range())
            .await?;
        if sealed.len() as u64 != u64::from(loc.entry.length) {
            return Err(Error::corrupt(
                format!("pack {}", loc.pack),
                format!("blob {id} is cut short (pack truncated)"),
            ));
        }
        self.decode_blob(id, &loc, &sealed)
    }

    /// Loads a tree, reading its pack by aligned windows that later trees are served from.
    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        Ok(self.load_tree_and_pack(id).await?.0)
    }

    /// Loads a tree as [`load_tree`](Self::load_tree) does; also returns the pack it is in.
    pub async fn load_tree_and_pack(&self, id: &Id) -> Result<(Tree, Id)> {
        if let Some(loc) = self.tree_headers.find(id) {
            match self.load_tree_at(id, &loc).await {
                Ok(tree) => return Ok((tree, loc.pack)),
                // The pack is gone since its header was read (a prune repacked it), or is
                // damaged: the tree is looked for where the index says.
                Err(_) => self.tree_headers.forget(&loc.pack),
            }
        }
        let loc = self.locate_tree(id).await?;
        Ok((self.load_tree_at(id, &loc).await?, loc.pack))
    }

    /// Where the index says the tree `id` is; reads the header of a tree pack that it keeps
    /// sending lookups to (see [`headers`]).
    async fn locate_tree(&self, id: &Id) -> Result<Location> {
        let loc = self.index.lookup(id)?.ok_or(Error::MissingBlob(*id))?;
        if let Some(reading) = self.tree_headers.looked_up(&loc.pack) {
            match self.read_pack_header(&loc.pack, None).await {
                Ok(entries) => self.tree_headers.keep(reading, loc.pack, entries),
                // The trees are read from where the index says; damage there is reported
                // by whoever reads it.
                Err(e) if e.kind() == ErrorKind::Damaged => {}
                Err(e) => return Err(e),
            }
        }
        Ok(loc)
    }

    /// Reads the header of `pack` from its end; `size` is its size when known (else asked
    /// of the store).
    pub async fn read_pack_header(&self, pack: &Id, size: Option<u64>) -> Result<Vec<PackEntry>> {
        /// Read from the end first: the header of a pack of a few thousand blobs; larger
        /// ones take a second read.
        const TAIL_GUESS: u64 = 64 << 10;
        let key = Pack::key(pack);
        let size = match size {
            Some(size) => size,
            None => self.store.head(&key).await?.size,
        };
        let start = size.saturating_sub(TAIL_GUESS);
        let mut tail = self.store.get_range(&key, start..size).await?;
        let needed = crate::format::pack::header_tail_len(pack, size, &tail)?;
        if needed > tail.len() as u64 {
            tail = self.store.get_range(&key, size - needed..size).await?;
        }
        crate::format::pack::read_header_from_tail(&self.keys, pack, size, &tail)
    }

    /// Loads the tree `id` from where the index said it is.
    pub(crate) async fn load_tree_at(&self, id: &Id, loc: &Location) -> Result<Tree> {
        let range = loc.entry.range();
        let key = Pack::key(&loc.pack);
        let window = window_for(&range);
        let cell = self.tree_windows.cell(loc.pack, window.start);
        let read = cell
            .get_or_try_init(|| async {
                let _turn = self.tree_windows.read_turn().await;
                self.store.get_range(&key, window.clone()).await
            })
            .await?;
        let sealed = match windows::slice(read, window.start, &range) {
            Some(sealed) => sealed,
            // The kept window was read for a tree ending earlier (trees may straddle a
            // window boundary), or the pack is cut short: read just this tree.
            None => self.store.get_range(&key, range.clone()).await?,
        };
        if sealed.len() as u64 != range.end - range.start {
            return Err(Error::corrupt(
                format!("pack {}", loc.pack),
                format!("tree {id} is cut short (pack truncated)"),
            ));
        }
        let bytes = self.decode_blob(id, loc, &sealed)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))
    }

    /// Seals `value` as JSON and stores it under `<dir>/<id>`, id = hash of the sealed bytes.
    pub async fn save_json<T: Serialize>(&self, dir: &str, value: &T) -> Result<Id> {
        let plain = serde_json::to_vec(value).expect("repository objects serialize");
        self.save_sealed(dir, &plain).await
    }

    pub async fn save_sealed(&self, dir: &str, plain: &[u8]) -> Result<Id> {
        let sealed = self.keys.seal(plain);
        let id = Id::hash_of(&sealed);
        self.store
            .put(&format!("{dir}/{id}"), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    pub async fn load_json<T: DeserializeOwned>(&self, dir: &str, id: &Id) -> Result<T> {
        let key = format!("{dir}/{id}");
        let sealed = self.store.get(&key).await?;
        if Id::hash_of(&sealed) != *id {
            return Err(Error::corrupt(key, "content does not match its name"));
        }
        let plain = self.keys.open(&sealed, || key.clone())?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(key.clone(), e.to_string()))
    }

    /// Every snapshot that loads, oldest first, and every `snapshots/` object that does not
    /// authenticate or parse (damage, or a stray file), by name: one bad object never hides
    /// the others.
    pub async fn snapshot_list(&self) -> Result<SnapshotList> {
        let ids: Vec<Id> = self
            .store
            .list("snapshots/")
            .await?
            .iter()
            .filter_map(|m| m.key.strip_prefix("snapshots/")?.parse().ok())
            .collect();
        let mut loads = futures::stream::iter(ids)
            .map(|id| async move { (id, self.load_json::<Snapshot>("snapshots", &id).await) })
            .buffer_unordered(16);
        let mut list = SnapshotList::default();
        while let Some((id, loaded)) = loads.next().await {
            match loaded {
                Ok(snapshot) => list.snapshots.push((id, snapshot)),
                // Forgotten since the listing.
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) if e.kind() == ErrorKind::Damaged => list.damaged.push(DamagedSnapshot {
                    id,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        list.snapshots
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        list.damaged.sort_by_key(|d| d.id);
        Ok(list)
    }

    /// Every snapshot that loads, oldest first. The damaged ones are left out, each with a
    /// warning (the log) that names it.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let list = self.snapshot_list().await?;
        for damaged in &list.damaged {
            tracing::warn!("{}", damaged.warning());
        }
        Ok(list.snapshots)
    }

    /// The snapshot `spec` names: `latest` (the latest that loads), an id, or a unique id
    /// prefix. A damaged snapshot it names is an error that says so.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        self.find_snapshot_in(spec, &SnapshotFilter::default())
            .await
    }

    /// [`find_snapshot`](Self::find_snapshot) among the snapshots `filter` selects: `latest`
    /// is the latest of them.
    pub async fn find_snapshot_in(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(Id, Snapshot)> {
        let mut list = self.snapshot_list().await?;
        list.snapshots.retain(|(_, s)| filter.matches(s));
        match snapshot::select(spec, &list.snapshots) {
            Ok(found) => Ok(found.clone()),
            Err(e) => match list.damaged_named(spec) {
                Some(damaged) => Err(Error::corrupt(
                    format!("snapshots/{}", damaged.id),
                    format!(
                        "the snapshot is damaged ({}); `stowage forget {}` removes it",
                        damaged.reason,
                        damaged.id.short()
                    ),
                )),
                None => Err(e),
            },
        }
    }

    /// Replaces snapshot `old` by `snapshot` (the same backup with other tags): the new
    /// object is stored before the old one goes, so a prune listing meanwhile sees one of
    /// them. Returns the new id.
    pub async fn rewrite_snapshot(&self, old: Id, snapshot: &Snapshot) -> Result<Id> {
        let new = self.save_json("snapshots", snapshot).await?;
        if new != old {
            self.store.delete(&format!("snapshots/{old}")).await?;
        }
        Ok(new)
    }

    /// The id of the snapshot `spec` names, damaged or not (for `forget`).
    pub async fn find_snapshot_id(&self, spec: &str) -> Result<Id> {
        let list = self.snapshot_list().await?;
        match snapshot::select(spec, &list.snapshots) {
            Ok((id, _)) => Ok(*id),
            Err(e) => list.damaged_named(spec).map(|d| d.id).ok_or(e),
        }
    }
}

/// What [`Repository::snapshot_list`] found.
#[derive(Debug, Default)]
pub struct SnapshotList {
    /// Oldest first.
    pub snapshots: Vec<(Id, Snapshot)>,
    pub damaged: Vec<DamagedSnapshot>,
}

impl SnapshotList {
    /// The damaged snapshot an id or unique id prefix names (never `latest`).
    fn damaged_named(&self, spec: &str) -> Option<&DamagedSnapshot> {
        let spec = spec.to_ascii_lowercase();
        let mut named = self
            .damaged
            .iter()
            .filter(|d| !spec.is_empty() && spec != "latest" && d.id.to_hex().starts_with(&spec));
        match (named.next(), named.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

/// A `snapshots/` object that does not authenticate or parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedSnapshot {
    pub id: Id,
    pub reason: String,
}

impl DamagedSnapshot {
    /// What to tell the user: which object, why, and what to do.
    pub fn warning(&self) -> String {
        format!(
            "snapshot {} is damaged and left out: {}; `stowage forget {}` removes it, or put \
             the object back from a copy",
            self.id.short(),
            self.reason,
            self.id.short()
        )
    }
}
