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
use sha2::{Digest, Sha256};
use stowage_backends::target::Target;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::pack::Pack;
use crate::progress::Progress;
use crate::registry;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Content, Node, NodeKind};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore into an existing directory of the same name.
    pub overwrite: bool,
    /// Files written at once.
    pub writers: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            writers: 4,
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
    let root = repo.load_tree(&snapshot.tree).await?;
    let [top] = root.nodes.as_slice() else {
        return Err(Error::corrupt(
            format!("tree {}", snapshot.tree),
            "root must hold one entry",
        ));
    };
    if !safe_name(&top.name.0) {
        return Err(Error::corrupt(
            format!("tree {}", snapshot.tree),
            "unsafe top-level name",
        ));
    }
    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&top.name.0));
    if !opts.overwrite
        && target
            .exists(&rel)
            .map_err(|e| Error::io(rel.display().to_string(), e))?
    {
        return Err(Error::Invalid(format!(
            "{} already exists in the target; remove it or pass --overwrite",
            rel.display()
        )));
    }
    progress.phase("restore", Some(snapshot.summary.bytes));
    let restorer = Arc::new(Restorer {
        repo,
        target,
        progress,
        slots: Arc::new(Semaphore::new(opts.writers.max(1))),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        symlinks: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
    });
    Arc::clone(&restorer).restore_node(rel, top.clone()).await?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(RestoreSummary {
        files: get(&restorer.files),
        dirs: get(&restorer.dirs),
        symlinks: get(&restorer.symlinks),
        bytes: get(&restorer.bytes),
        verified_blobs: get(&restorer.verified),
    })
}

/// A name that stays inside its directory.
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

fn io_at(rel: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(rel.display().to_string(), e)
}

impl Restorer {
    fn restore_node(self: Arc<Self>, rel: PathBuf, node: Node) -> BoxFuture<'static, Result<()>> {
        async move {
            match node.kind {
                NodeKind::Dir => self.restore_dir(rel, node).await,
                NodeKind::Symlink => {
                    let target = node.target.as_ref().ok_or_else(|| {
                        Error::corrupt(rel.display().to_string(), "symlink without target")
                    })?;
                    self.target.symlink(&rel, &target.0).map_err(io_at(&rel))?;
                    self.target
                        .set_meta(&rel, &node.meta())
                        .map_err(io_at(&rel))?;
                    self.symlinks.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                NodeKind::File => {
                    let _slot = Arc::clone(&self.slots)
                        .acquire_owned()
                        .await
                        .expect("semaphore open");
                    let me = Arc::clone(&self);
                    let handle = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || me.restore_file(&handle, &rel, &node))
                        .await
                        .map_err(|e| Error::Invalid(format!("worker panicked: {e}")))?
                }
            }
        }
        .boxed()
    }

    async fn restore_dir(self: Arc<Self>, rel: PathBuf, node: Node) -> Result<()> {
        self.target.create_dir(&rel).map_err(io_at(&rel))?;
        let subtree = node
            .subtree
            .ok_or_else(|| Error::corrupt(rel.display().to_string(), "directory without tree"))?;
        let tree = self.repo.load_tree(&subtree).await?;
        if let Some(bad) = tree.nodes.iter().find(|n| !safe_name(&n.name.0)) {
            return Err(Error::corrupt(
                format!("tree {subtree}"),
                format!(
                    "entry name {:?} would escape its directory",
                    bad.name.lossy()
                ),
            ));
        }
        let children: Vec<_> = tree
            .nodes
            .into_iter()
            .map(|child| {
                let child_rel = rel.join(std::ffi::OsStr::from_bytes(&child.name.0));
                tokio::spawn(Arc::clone(&self).restore_node(child_rel, child))
            })
            .collect();
        // Wait for every child even after a failure, so no task writes after we return.
        let mut first_error = None;
        for child in children {
            let result = child
                .await
                .map_err(|e| Error::Invalid(format!("task failed: {e}")))
                .and_then(|r| r);
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.target
            .set_meta(&rel, &node.meta())
            .map_err(io_at(&rel))?;
        self.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one file under a temporary name, verifies it, then gives it its name.
    fn restore_file(&self, rt: &tokio::runtime::Handle, rel: &Path, node: &Node) -> Result<()> {
        let mut sink = self.target.create_file(rel).map_err(io_at(rel))?;
        let digest = registry::blob_digest(rel);
        let mut sha = digest.map(|_| Sha256::new());
        let mut written = 0u64;
        let mut write = |bytes: &[u8]| -> Result<()> {
            if let Some(sha) = sha.as_mut() {
                sha.update(bytes);
            }
            sink.write_all(bytes).map_err(io_at(rel))?;
            written += bytes.len() as u64;
            self.progress.advance(bytes.len() as u64);
            Ok(())
        };
        match &node.content {
            Some(Content::Inline(bytes)) => write(&bytes.0)?,
            Some(Content::Chunks(ids)) => {
                for id in ids {
                    let loc = self
                        .repo
                        .index()
                        .lookup(id)?
                        .ok_or(Error::MissingBlob(*id))?;
                    let sealed = rt.block_on(
                        self.repo
                            .store()
                            .get_range(&Pack::key(&loc.pack), loc.entry.range()),
                    )?;
                    write(&self.repo.decode_blob(id, &loc, &sealed)?)?;
                }
            }
            None => {}
        }
        if written != node.size {
            return Err(Error::corrupt(
                rel.display().to_string(),
                format!(
                    "restored {written} bytes where the snapshot says {}",
                    node.size
                ),
            ));
        }
        if let (Some(expected), Some(sha)) = (digest, sha) {
            let actual: [u8; 32] = sha.finalize().into();
            if actual != expected {
                return Err(Error::DigestMismatch {
                    path: rel.display().to_string(),
                    digest: hex::encode(expected),
                });
            }
            self.verified.fetch_add(1, Ordering::Relaxed);
        }
        sink.flush().map_err(io_at(rel))?;
        sink.commit().map_err(io_at(rel))?;
        self.target
            .set_meta(rel, &node.meta())
            .map_err(io_at(rel))?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_that_escape_are_unsafe() {
        assert!(safe_name(b"data"));
        assert!(safe_name(b"..data"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
