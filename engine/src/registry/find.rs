//! Which snapshots hold something: a registry blob by its digest (which nights held this
//! layer), or the paths matching a pattern.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::registry::layout::{blob_data, Digest};
use crate::registry::select::v2_root;
use crate::repo::walk::{find_opt, Walk};
use crate::repo::Repository;

/// One match, in one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub snapshot: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    /// From the snapshot's top (its backed-up directory's name first); a directory's ends
    /// in `/`.
    pub path: String,
    pub size: u64,
}

/// The snapshots whose registry holds the blob `digest` (`sha256:<hex>` or the hex), oldest
/// first. Snapshots without a registry are passed over.
pub async fn find_digest(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    digest: &str,
) -> Result<Vec<Found>> {
    let text = match digest.contains(':') {
        true => digest.to_string(),
        false => format!("sha256:{digest}"),
    };
    let digest = Digest::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        Error::Usage(format!(
            "{digest:?} is not a sha256 digest (sha256:<64 hex digits>)"
        ))
    })?;
    let mut found = Vec::new();
    for (id, snap) in snapshots {
        let v2 = match v2_root(repo, snap).await {
            Ok(v2) => v2,
            Err(e) if e.kind() == ErrorKind::Usage => continue,
            Err(e) => return Err(e),
        };
        let path = blob_data(&v2, &digest);
        if let Some(node) = find_opt(repo, snap, &path).await? {
            found.push(Found {
                snapshot: *id,
                time: snap.time,
                path,
                size: node.size,
            });
        }
    }
    Ok(found)
}

/// The paths of the snapshots matching `pattern`, oldest snapshot first: `*` and `?` within
/// one path component, `**` across components. A pattern without `/` is matched against
/// names alone (`find '*.json'`), one with `/` against the whole path from the snapshot's
/// top.
pub async fn find_paths(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    pattern: &str,
) -> Result<Vec<Found>> {
    let whole_path = pattern.contains('/');
    let pattern = pattern.trim_start_matches('/');
    let mut found = Vec::new();
    for (id, snap) in snapshots {
        let mut walk = Walk::snapshot(repo, snap).await?;
        while let Some((rel, node)) = walk.next().await? {
            let path = rel.to_string_lossy();
            let subject = match whole_path {
                true => &path[..],
                false => path.rsplit('/').next().unwrap_or(&path),
            };
            if glob(pattern.as_bytes(), subject.as_bytes()) {
                let slash = if node.kind == NodeKind::Dir { "/" } else { "" };
                found.push(Found {
                    snapshot: *id,
                    time: snap.time,
                    path: format!("{path}{slash}"),
                    size: node.size,
                });
            }
        }
    }
    Ok(found)
}

/// Whether `text` matches `pattern` (`*`, `?` within a component, `**` across).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|at| glob(rest, &text[at..]))
        }
        [b'*', rest @ ..] => {
            let component = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=component).any(|at| glob(rest, &text[at..]))
        }
        [b'?', rest @ ..] => matches!(text, [c, tail @ ..] if *c != b'/' && glob(rest, tail)),
        [p, rest @ ..] => matches!(text, [c, tail @ ..] if c == p && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_within_and_across_components() {
        let yes = [
            ("*.json", "index.json"),
            ("tags/*/current/link", "tags/v1/current/link"),
            ("**/link", "a/b/c/link"),
            ("**/link", "link"),
            ("a/**/d", "a/b/c/d"),
            ("v?", "v1"),
        ];
        for (pattern, text) in yes {
            assert!(
                glob(pattern.as_bytes(), text.as_bytes()),
                "{pattern} ~ {text}"
            );
        }
        let no = [
            ("*.json", "a/b.json"),
            ("tags/*/link", "tags/v1/current/link"),
            ("v?", "v12"),
        ];
        for (pattern, text) in no {
            assert!(
                !glob(pattern.as_bytes(), text.as_bytes()),
                "{pattern} !~ {text}"
            );
        }
    }
}
