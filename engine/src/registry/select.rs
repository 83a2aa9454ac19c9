//! Partial restores: which paths of a snapshot to restore.
//!
//! `--include team/app-web:v2` (a repository, or repository:tag) selects what a registry
//! needs to serve exactly those images: each tag's `current` and `index` links, every
//! manifest reachable from it (through image indexes / manifest lists) with its revision
//! link and blob, and each image's config and layer blobs with their `_layers` links.
//! `--include-path` selects a raw path and everything below it.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::registry::layout::{blob_data, Digest, RepositoryPaths, V2_ROOTS};
use crate::repo::reader::write_file;
use crate::repo::walk::{find, find_opt};
use crate::repo::Repository;

/// What a partial restore writes: files by path (`<top>/...`), or everything below a prefix.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    files: BTreeSet<String>,
    prefixes: Vec<String>,
    /// Every directory on the way to a selected file or prefix.
    dirs: BTreeSet<String>,
}

impl Selection {
    pub fn new(files: BTreeSet<String>, prefixes: Vec<String>) -> Self {
        let mut dirs = BTreeSet::new();
        for path in files.iter().chain(prefixes.iter()) {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                dirs.insert(parent.to_string());
                at = parent;
            }
        }
        Selection {
            files,
            prefixes,
            dirs,
        }
    }

    fn under_prefix(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    pub fn keeps_dir(&self, path: &str) -> bool {
        self.dirs.contains(path) || self.under_prefix(path)
    }

    pub fn keeps_file(&self, path: &str) -> bool {
        self.files.contains(path) || self.under_prefix(path)
    }

    pub fn files(&self) -> &BTreeSet<String> {
        &self.files
    }
}

/// Where the registry's `v2` tree is in the snapshot (a volume keeps it under `_data`).
pub(crate) async fn v2_root(repo: &Repository, snapshot: &Snapshot) -> Result<String> {
    for candidate in V2_ROOTS {
        let path = format!("{}/{candidate}", snapshot.name);
        if find_opt(repo, snapshot, &path).await?.is_some() {
            return Ok(path);
        }
    }
    Err(Error::Usage(format!(
        "snapshot of {} holds no registry (no docker/registry/v2)",
        snapshot.name
    )))
}

async fn read(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Vec<u8>> {
    let node = find(repo, snapshot, path).await?;
    let mut bytes = Vec::new();
    let digest = super::blob_digest(std::path::Path::new(path));
    write_file(repo, path, &node, digest, &mut bytes).await?;
    Ok(bytes)
}

async fn exists(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<bool> {
    Ok(find_opt(repo, snapshot, path).await?.is_some())
}

fn digest(text: &str) -> Result<Digest> {
    Digest::parse(text).ok_or_else(|| Error::Usage(format!("{text:?} is not a sha256 digest")))
}

/// `team//app/` -> `team/app`; `..` is refused.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::Usage(format!("{path:?}: '..' is not allowed"))),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The files a registry needs to serve the images `includes` name.
pub async fn registry_selection(
    repo: &Repository,
    snapshot: &Snapshot,
    includes: &[String],
) -> Result<BTreeSet<String>> {
    let v2 = v2_root(repo, snapshot).await?;
    let mut files = BTreeSet::new();
    for include in includes {
        let (name, tag) = match include.rsplit_once(':') {
            Some((name, tag)) => (normalize(name)?, Some(tag)),
            None => (normalize(include)?, None),
        };
        let paths = RepositoryPaths::new(&v2, &name);
        if !exists(repo, snapshot, &paths.manifests()).await? {
            return Err(Error::Usage(format!(
                "no repository {name} in the snapshot"
            )));
        }
        let tags = match tag {
            Some(tag) => vec![tag.to_string()],
            None => match find_opt(repo, snapshot, &paths.tags()).await? {
                Some(dir) => match dir.subtree.filter(|_| dir.kind == NodeKind::Dir) {
                    Some(id) => repo
                        .load_tree(&id)
                        .await?
                        .nodes
                        .iter()
                        .map(|n| n.name.lossy())
                        .collect(),
                    None => Vec::new(),
                },
                None => Vec::new(),
            },
        };
        if tags.is_empty() {
            return Err(Error::Usage(format!(
                "repository {name} has no tags in the snapshot"
            )));
        }
        for tag in tags {
            let current = paths.tag_current(&tag);
            if !exists(repo, snapshot, &current).await? {
                return Err(Error::Usage(format!("no tag {name}:{tag} in the snapshot")));
            }
            let link = read(repo, snapshot, &current).await?;
            let digest = digest(String::from_utf8_lossy(&link).trim())?;
            files.insert(current);
            let index = paths.tag_index(&tag, &digest);
            if exists(repo, snapshot, &index).await? {
                files.insert(index);
            }
            let what = format!("{name}:{tag}");
            add_manifest(repo, snapshot, &v2, &paths, &what, digest, &mut files).await?;
        }
    }
    Ok(files)
}

/// A manifest (or index) with its revision link, and everything it references, for one
/// repository: blobs missing from the snapshot are an error naming the image (but foreign
/// layers, which carry `urls` and are never pushed to the registry).
async fn add_manifest(
    repo: &Repository,
    snapshot: &Snapshot,
    v2: &str,
    paths: &RepositoryPaths<'_>,
    what: &str,
    digest: Digest,
    files: &mut BTreeSet<String>,
) -> Result<()> {
    let missing = |digest: &Digest| {
        Error::bad_input(
            what.to_string(),
            format!("needs blob {digest}, which the snapshot does not hold"),
        )
    };
    let mut visited = BTreeSet::new();
    let mut pending = vec![digest];
    while let Some(digest) = pending.pop() {
        if !visited.insert(digest.clone()) {
            continue;
        }
        let blob = blob_data(v2, &digest);
        if !exists(repo, snapshot, &blob).await? {
            return Err(missing(&digest));
        }
        files.insert(blob.clone());
        let revision = paths.revision(&digest);
        if exists(repo, snapshot, &revision).await? {
            files.insert(revision);
        }
        let document: serde_json::Value =
            serde_json::from_slice(&read(repo, snapshot, &blob).await?).map_err(|e| {
                Error::bad_input(
                    format!("manifest {digest} of {what}"),
                    format!("not JSON: {e}"),
                )
            })?;
        if let Some(children) = document.get("manifests").and_then(|m| m.as_array()) {
            for child in children.iter().filter_map(|c| c["digest"].as_str()) {
                pending.push(self::digest(child)?);
            }
            continue;
        }
        // Image manifests (Docker schema 2, OCI): config and layers. Schema 1: fsLayers.
        let mut referenced: Vec<(Digest, bool)> = Vec::new();
        let descriptors = document.get("config").into_iter().chain(
            document
                .get("layers")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten(),
        );
        for d in descriptors {
            if let Some(digest) = d["digest"].as_str() {
                referenced.push((self::digest(digest)?, d.get("urls").is_some()));
            }
        }
        for layer in document
            .get("fsLayers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(digest) = layer["blobSum"].as_str() {
                referenced.push((self::digest(digest)?, false));
            }
        }
        for (digest, foreign) in referenced {
            let blob = blob_data(v2, &digest);
            match (exists(repo, snapshot, &blob).await?, foreign) {
                (true, _) => {
                    files.insert(blob);
                }
                (false, true) => continue,
                (false, false) => return Err(missing(&digest)),
            }
            let link = paths.layer(&digest);
            if exists(repo, snapshot, &link).await? {
                files.insert(link);
            }
        }
    }
    Ok(())
}

/// Whether `path` (`<top>/...`) names something in the snapshot; for `--include-path`.
pub async fn check_path(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<()> {
    match find_opt(repo, snapshot, path).await? {
        Some(_) => Ok(()),
        None => Err(Error::Usage(format!(
            "{path}: no such path in the snapshot"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_keep_files_their_directories_and_prefixes() {
        let files: BTreeSet<String> = ["top/a/b/file".to_string()].into();
        let sel = Selection::new(files, vec!["top/keep".into()]);
        assert!(sel.keeps_file("top/a/b/file"));
        assert!(!sel.keeps_file("top/a/b/other"));
        assert!(sel.keeps_dir("top/a") && sel.keeps_dir("top/a/b") && sel.keeps_dir("top"));
        assert!(!sel.keeps_dir("top/a/c"));
        assert!(sel.keeps_dir("top/keep/x") && sel.keeps_file("top/keep/x/y"));
        assert!(!sel.keeps_file("top/keeper"), "a prefix ends at a '/'");
    }
}
