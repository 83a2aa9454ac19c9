//! The restore pipeline: snapshot -> trees -> directories, then files in parallel, each
//! verified (blob ids always, registry blobs also against their sha256) before it gets its
//! real name -> directory metadata last, deepest first, so their mtimes stay.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use stowage_backends::target::Target;
use tokio::sync::Semaphore;

use crate::error::{Error, Joined, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::progress::Progress;
use crate::registry;
use crate::repo::reader::read_content;
use crate::repo::walk::{load_dir, top_node};
use crate::repo::Repository;
use crate::runtime;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore into an existing directory of the same name.
    pub overwrite: bool,
    /// Files written at once.
    pub writers: usize,
    /// Restore only these paths (a partial restore).
    pub only: Option<Arc<registry::select::Selection>>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            writers: 4,
            only: None,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Registry blobs whose sha256 was checked against their digest.
    pub verified_blobs: u64,
}

struct Restorer {
    repo: Arc<Repository>,
    only: Option<Arc<registry::select::Selection>>,
    target: Arc<dyn Target>,
    progress: Arc<dyn Progress>,
    slots: Arc<Semaphore>,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
}

/// Restores `snapshot` under the target: the backed-up directory comes back by its name.
pub async fn restore(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    target: Arc<dyn Target>,
    opts: RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary> {
    let top = top_node(&repo, &snapshot.tree).await?;
    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&top.name.0));
    if !opts.overwrite
        && target
            .exists(&rel)
            .map_err(|e| Error::io(rel.display().to_string(), e))?
    {
        return Err(Error::Usage(format!(
            "{} already exists in the target; remove it or pass --overwrite",
            rel.display()
        )));
    }
    progress.phase("restore", Some(snapshot.summary.bytes));
    let restorer = Arc::new(Restorer {
        repo,
        only: opts.only.clone(),
        target,
        progress,
        slots: Arc::new(Semaphore::new(opts.writers.max(1))),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
    });
    Arc::clone(&restorer).restore_node(rel, top).await?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(RestoreSummary {
        files: get(&restorer.files),
        dirs: get(&restorer.dirs),
        symlinks: get(&restorer.symlinks),
        bytes: get(&restorer.bytes),
        verified_blobs: get(&restorer.verified),
    })
}

fn io_at(rel: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(rel.display().to_string(), e)
}

impl Restorer {
    /// Whether a partial restore includes `child` of the directory at `rel`.
    fn selected(&self, rel: &Path, child: &Node) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let path = rel.join(std::ffi::OsStr::from_bytes(&child.name.0));
        let path = path.to_string_lossy();
        match child.kind {
            NodeKind::Dir => only.keeps_dir(&path),
            _ => only.keeps_file(&path),
        }
    }

    fn restore_node(self: Arc<Self>, rel: PathBuf, node: Node) -> BoxFuture<'static, Result<()>> {
        async move {
            match node.kind {
                NodeKind::Dir => self.restore_dir(rel, node).await,
                NodeKind::Symlink => {
                    let target = node.target.clone().ok_or_else(|| {
                        Error::corrupt(rel.display().to_string(), "symlink without target")
                    })?;
                    let (at, meta) = (rel.clone(), node.meta());
                    self.on_target(&rel, move |t| {
                        t.symlink(&at, &target.0)?;
                        t.set_meta(&at, &meta)
                    })
                    .await?;
                    self.symlinks.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                NodeKind::File => {
                    let _slot = Arc::clone(&self.slots)
                        .acquire_owned()
                        .await
                        .expect("semaphore open");
                    let me = Arc::clone(&self);
                    let handle = runtime::handle();
                    runtime::blocking("a restore worker", move || {
                        me.restore_file(&handle, &rel, &node)
                    })
                    .await?
                }
            }
        }
        .boxed()
    }

    /// Runs a target operation (blocking: a network target waits on its server) off the
    /// async workers, within the restore's slots. Thousands of directories are restored at
    /// once; calling the target from their tasks directly would tie up every worker.
    async fn on_target<T: Send + 'static>(
        &self,
        rel: &Path,
        op: impl FnOnce(&dyn Target) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let target = Arc::clone(&self.target);
        runtime::blocking("a restore worker", move || op(target.as_ref()))
            .await?
            .map_err(io_at(rel))
    }

    async fn restore_dir(self: Arc<Self>, rel: PathBuf, node: Node) -> Result<()> {
        let at = rel.clone();
        self.on_target(&rel, move |t| t.create_dir(&at)).await?;
        let tree = load_dir(&self.repo, &rel, &node).await?;
        let children: Vec<_> = tree
            .nodes
            .into_iter()
            .filter(|child| self.selected(&rel, child))
            .map(|child| {
                let child_rel = rel.join(std::ffi::OsStr::from_bytes(&child.name.0));
                tokio::spawn(Arc::clone(&self).restore_node(child_rel, child))
            })
            .collect();
        // Wait for every child even after a failure, so no task writes after we return.
        let mut first_error = None;
        for child in children {
            let result = child.await.joined("a restore worker").and_then(|r| r);
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let (at, meta) = (rel.clone(), node.meta());
        self.on_target(&rel, move |t| t.set_meta(&at, &meta))
            .await?;
        self.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one file under a temporary name, verifies it, then gives it its name.
    fn restore_file(&self, rt: &tokio::runtime::Handle, rel: &Path, node: &Node) -> Result<()> {
        let mut sink = self.target.create_file(rel).map_err(io_at(rel))?;
        let content = read_content(
            &self.repo,
            rt,
            rel,
            node,
            registry::blob_digest(rel),
            |bytes| {
                sink.write_all(bytes).map_err(io_at(rel))?;
                self.progress.advance(bytes.len() as u64);
                Ok(())
            },
        )?;
        if content.digest_verified {
            self.verified.fetch_add(1, Ordering::Relaxed);
        }
        sink.flush().map_err(io_at(rel))?;
        sink.commit().map_err(io_at(rel))?;
        self.target
            .set_meta(rel, &node.meta())
            .map_err(io_at(rel))?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(content.bytes, Ordering::Relaxed);
        Ok(())
    }
}
