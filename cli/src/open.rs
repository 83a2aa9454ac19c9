//! From command-line options to open things: the one home for location -> backend
//! ([`Context::open_store`], [`Context::create_store`], [`Context::open_source`],
//! [`Context::open_target`]), used by every command, and the repository with its password and
//! cache ([`Context::open`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use stowage_backends::fs::FsStore;
use stowage_backends::logging::LoggingStore;
use stowage_backends::source::{FsSource, Source};
use stowage_backends::target::{FsTarget, Target};
use stowage_backends::{KvStore, MemoryKv, Store};
use stowage_engine::Repository;
use stowage_nfs::{NfsSource, NfsStore, NfsTarget, NfsUrl};
use stowage_rocksdb::{OpenError, RocksKv};
use stowage_s3::{S3Options, S3Source, S3Store, S3Target, S3Url};

use crate::progress::Bars;
use crate::Cli;

pub struct Context {
    repo: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: Option<PathBuf>,
    pub quiet: bool,
    pub s3: S3Options,
    /// What the command records for `--metrics-file`.
    pub metrics: crate::metrics::Metrics,
}

/// Where a repository, a source or a target is: a directory, a bucket and prefix, or a path
/// on an NFS server.
pub enum Location {
    Dir(PathBuf),
    S3(S3Url),
    Nfs(NfsUrl),
}

impl Location {
    pub fn parse(location: &str) -> anyhow::Result<Self> {
        if let Some(url) = S3Url::parse(location) {
            return Ok(Location::S3(url.map_err(|e| anyhow!(e))?));
        }
        if let Some(url) = NfsUrl::parse(location) {
            return Ok(Location::Nfs(url.map_err(|e| anyhow!(e))?));
        }
        if let Some((scheme, _)) = location.split_once("://") {
            if scheme != "file" {
                bail!(
                    "{location}: unsupported location (use a directory path, s3://bucket/prefix or nfs://host/export/path)"
                );
            }
        }
        Ok(Location::Dir(PathBuf::from(
            location.strip_prefix("file://").unwrap_or(location),
        )))
    }
}

/// `name` inside `location` (a directory, bucket prefix or NFS path).
pub fn location_join(location: &str, name: &str) -> String {
    match NfsUrl::parse(location) {
        Some(Ok(url)) => url.join(name),
        _ => format!("{}/{name}", location.trim_end_matches('/')),
    }
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        Context {
            repo: cli.repo.clone(),
            password_file: cli.password_file.clone(),
            password_command: cli.password_command.clone(),
            cache_dir: cli.cache_dir.clone(),
            quiet: cli.quiet,
            s3: cli.s3.options(),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    pub fn repo_location(&self) -> anyhow::Result<&str> {
        self.repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository given: pass --repo or set STOWAGE_REPO"))
    }

    /// The store of an existing repository.
    pub async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        self.open_store(self.repo_location()?).await
    }

    /// The store at `location`, which must exist.
    pub async fn open_store(&self, location: &str) -> anyhow::Result<Arc<dyn Store>> {
        Ok(logged(self.open_bare_store(location).await?))
    }

    async fn open_bare_store(&self, location: &str) -> anyhow::Result<Arc<dyn Store>> {
        // A missing directory or export path: no repository there (yet).
        let missing = |e: std::io::Error, detail: &str| -> anyhow::Error {
            match e.kind() {
                std::io::ErrorKind::NotFound => stowage_engine::Error::NoRepository {
                    location: location.to_string(),
                    detail: format!("{detail} ({e})"),
                }
                .into(),
                _ => anyhow!("{location}: {e}"),
            }
        };
        Ok(match Location::parse(location)? {
            Location::S3(url) => Arc::new(S3Store::open(url, &self.s3).await?),
            Location::Nfs(url) => Arc::new(
                NfsStore::open(&url)
                    .await
                    .map_err(|e| missing(e, "the path does not exist on the server"))?,
            ),
            Location::Dir(path) => Arc::new(
                FsStore::open(&path).map_err(|e| missing(e, "the directory does not exist"))?,
            ),
        })
    }

    /// The store for a new repository (a directory is created; a bucket must exist).
    pub async fn create_store(&self, location: &str) -> anyhow::Result<Arc<dyn Store>> {
        Ok(logged(match Location::parse(location)? {
            Location::S3(url) => Arc::new(S3Store::open(url, &self.s3).await?),
            Location::Nfs(url) => Arc::new(
                NfsStore::create(&url)
                    .await
                    .with_context(|| format!("creating {location}"))?,
            ),
            Location::Dir(path) => {
                Arc::new(FsStore::create(&path).with_context(|| format!("creating {location}"))?)
            }
        }))
    }

    /// What a backup reads: a directory, a registry in a bucket (the s3 driver's settings) or
    /// a path on an NFS server.
    pub async fn open_source(&self, location: &str) -> anyhow::Result<Arc<dyn Source>> {
        let context = || format!("cannot back up {location}");
        Ok(match Location::parse(location)? {
            Location::Dir(path) => Arc::new(FsSource::new(&path).with_context(context)?),
            Location::S3(url) => {
                Arc::new(S3Source::open(url, &self.s3).await.with_context(context)?)
            }
            Location::Nfs(url) => Arc::new(NfsSource::open(&url).await.with_context(context)?),
        })
    }

    /// Where a restore writes, and how to name the restored directory `name` there.
    pub async fn open_target(
        &self,
        location: &str,
        name: &str,
    ) -> anyhow::Result<(Arc<dyn Target>, String)> {
        let context = || format!("target {location}");
        Ok(match Location::parse(location)? {
            Location::Dir(dir) => (
                Arc::new(FsTarget::new(&dir).with_context(context)?),
                dir.join(name).display().to_string(),
            ),
            Location::S3(url) => (
                Arc::new(
                    S3Target::open(url.clone(), &self.s3)
                        .await
                        .with_context(context)?,
                ),
                url.to_string(),
            ),
            Location::Nfs(url) => (
                Arc::new(NfsTarget::open(&url).await.with_context(context)?),
                url.to_string(),
            ),
        })
    }

    /// The password: `--password-file`, `--password-command`, `STOWAGE_PASSWORD`, or a
    /// prompt on a terminal.
    pub fn password(&self, confirm: bool) -> anyhow::Result<Vec<u8>> {
        password_from(
            self.password_file.as_deref(),
            self.password_command.as_deref(),
            "STOWAGE_PASSWORD",
            confirm,
        )
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
        let store = self.store().await?;
        let password = self.password(false)?;
        self.open_repository(store, &password).await
    }

    /// Opens the repository in `store` with its local cache.
    pub async fn open_repository(
        &self,
        store: Arc<dyn Store>,
        password: &[u8],
    ) -> anyhow::Result<Arc<Repository>> {
        let root = self.cache_root()?;
        let cache = move |repo_id: &str| -> stowage_engine::Result<Arc<dyn KvStore>> {
            open_cache(&root.join(repo_id))
        };
        Ok(Arc::new(Repository::open(store, password, cache).await?))
    }

    pub fn bars(&self) -> Arc<Bars> {
        Arc::new(Bars::new(self.quiet))
    }
}

/// Opens the local cache in `dir`, a directory only this user may enter (it holds registry
/// digests and blob ids). A cache another stowage process holds gives way to a temporary
/// one; a cache that cannot be opened (damaged) is moved aside and built anew from the
/// repository's index, with the reason in a note.
fn open_cache(dir: &Path) -> stowage_engine::Result<Arc<dyn KvStore>> {
    let io = |path: &Path, e| stowage_engine::Error::io(path.display().to_string(), e);
    private_dir(dir).map_err(|e| io(dir, e))?;
    let why = match RocksKv::open(dir) {
        Ok(kv) => return Ok(Arc::new(kv)),
        // RocksDB allows one writer: work from a private in-memory cache, rebuilt from
        // the repository's index.
        Err(OpenError::InUse) => {
            eprintln!(
                "note: the cache in {} is in use by another stowage process; using a temporary one",
                dir.display()
            );
            return Ok(Arc::new(MemoryKv::new()));
        }
        Err(OpenError::Failed(e)) => e,
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".broken-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(|e| io(dir, e))?;
    eprintln!(
        "note: the cache in {} cannot be opened ({why}); moved it to {} and building a new one from the repository's index",
        dir.display(),
        aside.display()
    );
    private_dir(dir).map_err(|e| io(dir, e))?;
    match RocksKv::open(dir) {
        Ok(kv) => Ok(Arc::new(kv)),
        Err(e) => Err(io(dir, std::io::Error::other(e.to_string()))),
    }
}

/// Creates `dir` (and its missing parents) as 0700, and takes away others' access to it
/// when it exists already.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A password from `file`, else the output of `command` (run by `sh -c`), else the
/// environment variable `var`, else a terminal prompt.
pub fn password_from(
    file: Option<&Path>,
    command: Option<&str>,
    var: &str,
    confirm: bool,
) -> anyhow::Result<Vec<u8>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading password file {}", file.display()))?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            bail!("password file {} is empty", file.display());
        }
        return Ok(password.as_bytes().to_vec());
    }
    if let Some(command) = command {
        return password_of_command(command);
    }
    if let Ok(password) = std::env::var(var) {
        if password.is_empty() {
            bail!("{var} is empty");
        }
        return Ok(password.into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given: set {var}, pass a password file, or run on a terminal");
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

/// Every store the CLI opens logs its requests (`tracing`): slow ones at `warn`, all of them
/// with `STOWAGE_LOG=debug`.
fn logged(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(LoggingStore::new(store))
}

/// The first line a password command prints (a secret manager's CLI, `pass show ...`).
fn password_of_command(command: &str) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running the password command {command:?}"))?;
    if !out.status.success() {
        bail!("the password command {command:?} failed ({})", out.status);
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| anyhow!("the password command {command:?} printed no UTF-8 text"))?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        bail!("the password command {command:?} printed no password");
    }
    Ok(password.as_bytes().to_vec())
}
