//! From command-line options to an open repository: the store, the password, the cache.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use stowage_backends::fs::FsStore;
use stowage_backends::{KvStore, MemoryKv, Store};
use stowage_engine::Repository;
use stowage_rocksdb::RocksKv;

use crate::progress::Bars;
use crate::Cli;

pub struct Context {
    repo: Option<String>,
    password_file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    pub quiet: bool,
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        Context {
            repo: cli.repo.clone(),
            password_file: cli.password_file.clone(),
            cache_dir: cli.cache_dir.clone(),
            quiet: cli.quiet,
        }
    }

    pub fn repo_location(&self) -> anyhow::Result<&str> {
        self.repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository given: pass --repo or set STOWAGE_REPO"))
    }

    /// The store of an existing repository.
    pub fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let location = self.repo_location()?;
        let path = location.strip_prefix("file://").unwrap_or(location);
        match FsStore::open(path) {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(stowage_engine::Error::NoRepository {
                    location: location.to_string(),
                    detail: "the directory does not exist".into(),
                }
                .into())
            }
            Err(e) => Err(anyhow!("{location}: {e}")),
        }
    }

    /// The store for a new repository (its directory is created).
    pub fn new_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let location = self.repo_location()?;
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Arc::new(
            FsStore::create(path).with_context(|| format!("creating {location}"))?,
        ))
    }

    /// The password: `--password-file`, `STOWAGE_PASSWORD`, or a prompt on a terminal.
    pub fn password(&self, confirm: bool) -> anyhow::Result<Vec<u8>> {
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading password file {}", file.display()))?;
            let password = text.strip_suffix('\n').unwrap_or(&text);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                bail!("password file {} is empty", file.display());
            }
            return Ok(password.as_bytes().to_vec());
        }
        if let Ok(password) = std::env::var("STOWAGE_PASSWORD") {
            if password.is_empty() {
                bail!("STOWAGE_PASSWORD is empty");
            }
            return Ok(password.into_bytes());
        }
        if !std::io::stdin().is_terminal() {
            bail!("no password given: set STOWAGE_PASSWORD, pass --password-file, or run on a terminal");
        }
        let password = rpassword::prompt_password("repository password: ")?;
        if password.is_empty() {
            bail!("empty password");
        }
        if confirm && rpassword::prompt_password("enter it again: ")? != password {
            bail!("the passwords differ");
        }
        Ok(password.into_bytes())
    }

    fn cache_root(&self) -> anyhow::Result<PathBuf> {
        match &self.cache_dir {
            Some(dir) => Ok(dir.clone()),
            None => dirs::cache_dir()
                .map(|d| d.join("stowage"))
                .ok_or_else(|| anyhow!("no cache directory known for this user: pass --cache-dir")),
        }
    }

    /// Opens the repository with its local cache.
    pub async fn open(&self) -> anyhow::Result<Arc<Repository>> {
        let store = self.store()?;
        let password = self.password(false)?;
        let root = self.cache_root()?;
        let cache = move |repo_id: &str| -> stowage_engine::Result<Arc<dyn KvStore>> {
            let dir = root.join(repo_id);
            std::fs::create_dir_all(&dir)
                .map_err(|e| stowage_engine::Error::io(dir.display().to_string(), e))?;
            match RocksKv::open(&dir) {
                Ok(kv) => Ok(Arc::new(kv)),
                // Another stowage process holds the cache (RocksDB allows one writer): work
                // from a private in-memory cache, rebuilt from the repository's index.
                Err(e) if e.0.contains("lock") => {
                    eprintln!(
                        "note: the cache in {} is in use by another stowage process; using a temporary one",
                        dir.display()
                    );
                    Ok(Arc::new(MemoryKv::new()))
                }
                Err(e) => Err(e.into()),
            }
        };
        Ok(Arc::new(Repository::open(store, &password, cache).await?))
    }

    pub fn bars(&self) -> Arc<Bars> {
        Arc::new(Bars::new(self.quiet))
    }
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
