//! What changed between two snapshots (`stowage diff`), read the way a registry operator
//! thinks: repositories and tags added, removed or moved to another manifest, blobs added
//! and removed with their sizes; plain path changes for everything outside the registry's
//! `docker/registry/v2/` tree. Subtrees with the same id are identical and not walked.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::registry::layout::{v2_relative, V2Path};
use crate::repo::Repository;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TagChange {
    pub repository: String,
    pub tag: String,
    /// The manifest digest before (`None`: the tag is new).
    pub from: Option<String>,
    /// The manifest digest after (`None`: the tag was removed).
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlobChange {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Diff {
    pub repositories_added: Vec<String>,
    pub repositories_removed: Vec<String>,
    /// Tags added (`from` none), removed (`to` none) or moved (both set).
    pub tags: Vec<TagChange>,
    pub blobs_added: Vec<BlobChange>,
    pub blobs_removed: Vec<BlobChange>,
    /// Registry files other than tags and blobs (revision and layer links, uploads) that
    /// changed: counted, not listed.
    pub other_registry_files: u64,
    /// Paths outside the registry tree, relative to the snapshots' top directory.
    pub paths_added: Vec<String>,
    pub paths_removed: Vec<String>,
    pub paths_changed: Vec<String>,
}

/// What a walk of two snapshots has found so far: each file difference is taken in as it is
/// met (nothing held per path but what the result lists), the registry's changes keyed by
/// what they are, not where (the registry may sit at another path in each snapshot).
/// A file at a path on each side, `None` where there is none.
type Change = (String, Option<Node>, Option<Node>);

#[derive(Default)]
struct Found {
    diff: Diff,
    /// Tags whose `current/link` differs: (repository, tag), with the link's node at its
    /// path before and after, read once the walk is done.
    tags: Vec<((String, String), Change)>,
    removed: BTreeMap<String, u64>,
    added: BTreeMap<String, u64>,
    /// Repositories (directories holding `_manifests`) on each side below the points
    /// where the snapshots differ.
    repositories: (BTreeSet<String>, BTreeSet<String>),
}

impl Found {
    /// Takes in the file difference at `path`: `before` and `after`, `None` where there is
    /// none.
    fn file(&mut self, path: String, before: Option<Node>, after: Option<Node>) {
        let Some(registry_path) = v2_relative(&path) else {
            match (&before, &after) {
                (None, Some(_)) => self.diff.paths_added.push(path),
                (Some(_), None) => self.diff.paths_removed.push(path),
                _ => self.diff.paths_changed.push(path),
            }
            return;
        };
        let what = V2Path::parse(&registry_path);
        if let (V2Path::BlobData(digest), true) = (&what, before.is_none() || after.is_none()) {
            let digest = digest.to_string();
            if let Some(node) = &before {
                self.removed.insert(digest.clone(), node.size);
            }
            if let Some(node) = &after {
                self.added.insert(digest, node.size);
            }
            return;
        }
        let is_file = |n: &Option<Node>| n.as_ref().is_none_or(|n| n.kind == NodeKind::File);
        if let (V2Path::TagCurrent { repository, tag }, true) =
            (what, is_file(&before) && is_file(&after))
        {
            self.tags.push(((repository, tag), (path, before, after)));
            return;
        }
        self.diff.other_registry_files += 1;
    }

    /// Takes in a directory at `path` present before (`side` 0) or after (1).
    fn dir(&mut self, side: usize, path: &str) {
        let Some(rel) = v2_relative(path) else {
            return;
        };
        if let V2Path::Manifests { repository } = V2Path::parse(&rel) {
            match side {
                0 => self.repositories.0.insert(repository),
                _ => self.repositories.1.insert(repository),
            };
        }
    }

    /// The difference found; reads the changed tags' links.
    async fn result(self, repo: &Repository) -> Result<Diff> {
        let (added, removed) = self.repositories_changed();
        let mut diff = self.diff;
        (diff.repositories_added, diff.repositories_removed) = (added, removed);
        let mut tags: BTreeMap<(String, String), (Option<String>, Option<String>)> =
            BTreeMap::new();
        for (key, (path, before, after)) in self.tags {
            let entry = tags.entry(key).or_default();
            if let Some(node) = &before {
                entry.0 = Some(link_target(repo, &path, node).await?);
            }
            if let Some(node) = &after {
                entry.1 = Some(link_target(repo, &path, node).await?);
            }
        }
        diff.tags = tags
            .into_iter()
            .filter(|(_, (from, to))| from != to)
            .map(|((repository, tag), (from, to))| TagChange {
                repository,
                tag,
                from,
                to,
            })
            .collect();
        let only = |these: &BTreeMap<String, u64>, others: &BTreeMap<String, u64>| {
            these
                .iter()
                .filter(|(d, _)| !others.contains_key(*d))
                .map(|(digest, size)| BlobChange {
                    digest: digest.clone(),
                    size: *size,
                })
                .collect()
        };
        diff.blobs_added = only(&self.added, &self.removed);
        diff.blobs_removed = only(&self.removed, &self.added);
        Ok(diff)
    }

    /// Repositories added and removed.
    fn repositories_changed(&self) -> (Vec<String>, Vec<String>) {
        let (before, after) = &self.repositories;
        (
            after.difference(before).cloned().collect(),
            before.difference(after).cloned().collect(),
        )
    }
}

/// Compares snapshot `a` (before) with `b` (after).
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Diff> {
    let top_a = repo.load_tree(&a.tree).await?.nodes.into_iter().next();
    let top_b = repo.load_tree(&b.tree).await?.nodes.into_iter().next();
    let mut found = Found::default();
    compare(
        repo,
        String::new(),
        top_a.and_then(|n| n.subtree),
        top_b.and_then(|n| n.subtree),
        &mut found,
    )
    .await?;
    found.result(repo).await
}

/// A link file's content (a digest), read and verified.
async fn link_target(repo: &Repository, path: &str, node: &Node) -> Result<String> {
    let mut bytes = Vec::new();
    crate::repo::reader::write_file(repo, path, node, None, &mut bytes).await?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// Walks two directory trees (either may be absent) side by side, below the points where
/// they differ, into `found`.
fn compare<'a>(
    repo: &'a Repository,
    path: String,
    a: Option<Id>,
    b: Option<Id>,
    found: &'a mut Found,
) -> BoxFuture<'a, Result<()>> {
    async move {
        if a == b {
            return Ok(());
        }
        let load = |id: Option<Id>| async move {
            match id {
                Some(id) => Ok::<_, crate::Error>(repo.load_tree(&id).await?.nodes),
                None => Ok(Vec::new()),
            }
        };
        let (nodes_a, nodes_b) = (load(a).await?, load(b).await?);
        let mut names: BTreeMap<Vec<u8>, (Option<Node>, Option<Node>)> = BTreeMap::new();
        for node in nodes_a {
            let name = node.name.0.clone();
            names.entry(name).or_default().0 = Some(node);
        }
        for node in nodes_b {
            let name = node.name.0.clone();
            names.entry(name).or_default().1 = Some(node);
        }
        for (name, (x, y)) in names {
            let child = match path.is_empty() {
                true => String::from_utf8_lossy(&name).into_owned(),
                false => format!("{path}/{}", String::from_utf8_lossy(&name)),
            };
            let is_dir = |n: &Option<Node>| n.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
            let sub = |n: &Option<Node>| {
                n.as_ref()
                    .filter(|n| n.kind == NodeKind::Dir)
                    .and_then(|n| n.subtree)
            };
            if is_dir(&x) {
                found.dir(0, &child);
            }
            if is_dir(&y) {
                found.dir(1, &child);
            }
            if is_dir(&x) || is_dir(&y) {
                compare(repo, child.clone(), sub(&x), sub(&y), found).await?;
            }
            let file = |n: Option<Node>| n.filter(|n| n.kind != NodeKind::Dir);
            let (x, y) = (file(x), file(y));
            let same = match (&x, &y) {
                (Some(p), Some(q)) => {
                    p.kind == q.kind
                        && p.size == q.size
                        && p.mode == q.mode
                        && p.content == q.content
                        && p.target == q.target
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                found.file(child, x, y);
            }
        }
        Ok(())
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_the_directories_holding_manifests() {
        let mut found = Found::default();
        found.dir(
            0,
            "dtr/_data/docker/registry/v2/repositories/team/app/_manifests",
        );
        found.dir(
            0,
            "dtr/_data/docker/registry/v2/repositories/team/app/_layers",
        );
        found.dir(
            1,
            "dtr/_data/docker/registry/v2/repositories/team/web/_manifests",
        );
        assert_eq!(found.repositories.0, ["team/app".to_string()].into());
        let (added, removed) = found.repositories_changed();
        assert_eq!(removed, ["team/app".to_string()]);
        assert_eq!(added, ["team/web".to_string()]);
    }
}
