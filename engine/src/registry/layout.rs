//! The registry v2 storage layout as a path grammar: where the `v2` tree sits in a volume,
//! blob data named by its digest, layer and revision links, tags. Builders give the paths a
//! registry reads; parsers say what a path is. Nothing else in the engine spells these paths.

use std::path::Path;

/// The sha256 digest a registry blob's path names: `.../blobs/sha256/<xx>/<64 hex>/data`,
/// where `<xx>` is the first two hex digits. Other paths give `None`.
pub fn blob_digest(path: &Path) -> Option<[u8; 32]> {
    let parts: Vec<&[u8]> = path
        .iter()
        .map(std::os::unix::ffi::OsStrExt::as_bytes)
        .collect();
    let [.., blobs, algo, prefix, hex, data] = parts.as_slice() else {
        return None;
    };
    if *blobs != b"blobs" || *algo != b"sha256" || *data != b"data" || hex.len() != 64 {
        return None;
    }
    if !hex.starts_with(prefix) || prefix.len() != 2 {
        return None;
    }
    if !hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// The replica id in a DTR volume name: `dtr-registry-<id>` or `dtr-registry-nfs-<id>`.
pub fn replica_id(volume_name: &str) -> Option<String> {
    let rest = volume_name.strip_prefix("dtr-registry-")?;
    let id = rest.strip_prefix("nfs-").unwrap_or(rest);
    (!id.is_empty()).then(|| id.to_string())
}

/// Where the `v2` tree sits below a snapshot's top directory: a DTR volume keeps it under
/// `_data`, a plain registry root holds it directly.
pub const V2_ROOTS: [&str; 2] = ["_data/docker/registry/v2", "docker/registry/v2"];

/// A registry digest, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 hex>`; other algorithms and malformed digests give `None`.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Digest(text.to_string()))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The paths of one repository of the registry whose `v2` tree is at `v2`.
pub struct RepositoryPaths<'a> {
    v2: &'a str,
    name: &'a str,
}

impl<'a> RepositoryPaths<'a> {
    pub fn new(v2: &'a str, name: &'a str) -> Self {
        RepositoryPaths { v2, name }
    }

    /// `repositories/<name>/_manifests`: present exactly when the repository exists.
    pub fn manifests(&self) -> String {
        format!("{}/repositories/{}/_manifests", self.v2, self.name)
    }

    /// The directory of the repository's tags.
    pub fn tags(&self) -> String {
        format!("{}/tags", self.manifests())
    }

    /// The link naming the manifest a tag points to now.
    pub fn tag_current(&self, tag: &str) -> String {
        format!("{}/{tag}/current/link", self.tags())
    }

    /// The link recording that a tag pointed to `digest`.
    pub fn tag_index(&self, tag: &str, digest: &Digest) -> String {
        format!("{}/{tag}/index/sha256/{}/link", self.tags(), digest.hex())
    }

    /// The link that makes manifest `digest` servable from this repository.
    pub fn revision(&self, digest: &Digest) -> String {
        format!(
            "{}/revisions/sha256/{}/link",
            self.manifests(),
            digest.hex()
        )
    }

    /// The link that makes blob `digest` servable from this repository.
    pub fn layer(&self, digest: &Digest) -> String {
        format!(
            "{}/repositories/{}/_layers/sha256/{}/link",
            self.v2,
            self.name,
            digest.hex()
        )
    }
}

/// The data of blob `digest` in the registry whose `v2` tree is at `v2`.
pub fn blob_data(v2: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{v2}/blobs/sha256/{}/{hex}/data", &hex[..2])
}

/// The part of `path` inside a registry's `docker/registry/v2` tree, if it is in one.
pub fn v2_relative(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts
        .windows(3)
        .position(|w| w == ["docker", "registry", "v2"])?;
    Some(parts[at + 3..].join("/"))
}

/// What a path inside the `v2` tree (relative to it) is, for the paths a diff reports.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Path {
    /// `blobs/sha256/<xx>/<hex>/data`
    BlobData(Digest),
    /// `repositories/<name>/_manifests/tags/<tag>/current/link`
    TagCurrent {
        repository: String,
        tag: String,
    },
    /// `repositories/<name>/_manifests`
    Manifests {
        repository: String,
    },
    Other,
}

impl V2Path {
    pub fn parse(rel: &str) -> V2Path {
        let parts: Vec<&str> = rel.split('/').collect();
        if let ["blobs", "sha256", prefix, hex, "data"] = parts.as_slice() {
            if hex.len() == 64 && hex.starts_with(prefix) && prefix.len() == 2 {
                if let Some(digest) = Digest::parse(&format!("sha256:{hex}")) {
                    return V2Path::BlobData(digest);
                }
            }
        }
        let Some(rest) = rel.strip_prefix("repositories/") else {
            return V2Path::Other;
        };
        if let Some(repository) = rest.strip_suffix("/_manifests") {
            return V2Path::Manifests {
                repository: repository.to_string(),
            };
        }
        if let Some((repository, tail)) = rest.split_once("/_manifests/tags/") {
            if let Some(tag) = tail.strip_suffix("/current/link") {
                if !tag.contains('/') {
                    return V2Path::TagCurrent {
                        repository: repository.to_string(),
                        tag: tag.to_string(),
                    };
                }
            }
        }
        V2Path::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blob_paths_only() {
        let hex = "ab".to_string() + &"0".repeat(62);
        let good = format!("_data/docker/registry/v2/blobs/sha256/ab/{hex}/data");
        assert_eq!(blob_digest(Path::new(&good)).map(|d| d[0]), Some(0xab));
        let wrong_prefix = format!("blobs/sha256/cd/{hex}/data");
        assert!(blob_digest(Path::new(&wrong_prefix)).is_none());
        let link = format!("repositories/a/_layers/sha256/{hex}/link");
        assert!(blob_digest(Path::new(&link)).is_none());
        assert!(blob_digest(Path::new("data")).is_none());
    }

    #[test]
    fn paths_inside_v2_parse_and_build_alike() {
        let hex = "ab".to_string() + &"0".repeat(62);
        let digest = Digest::parse(&format!("sha256:{hex}")).expect("digest");
        assert_eq!(Digest::parse("sha512:ab"), None);
        assert_eq!(Digest::parse(&format!("sha256:{}", "A".repeat(64))), None);
        let data = blob_data("v2", &digest);
        assert_eq!(data, format!("v2/blobs/sha256/ab/{hex}/data"));
        let rel = v2_relative(&format!("top/_data/docker/registry/{data}")).expect("in v2");
        assert_eq!(V2Path::parse(&rel), V2Path::BlobData(digest.clone()));
        assert_eq!(
            V2Path::parse(&format!("blobs/sha256/cd/{hex}/data")),
            V2Path::Other
        );
        let repo = RepositoryPaths::new("v2", "team/app");
        assert_eq!(
            V2Path::parse(repo.tag_current("v2").strip_prefix("v2/").expect("rel")),
            V2Path::TagCurrent {
                repository: "team/app".into(),
                tag: "v2".into()
            }
        );
        assert_eq!(
            V2Path::parse(repo.manifests().strip_prefix("v2/").expect("rel")),
            V2Path::Manifests {
                repository: "team/app".into()
            }
        );
        let index = repo.tag_index("v2", &digest);
        assert_eq!(
            V2Path::parse(index.strip_prefix("v2/").expect("rel")),
            V2Path::Other
        );
        assert_eq!(v2_relative("top/xdocker/registry/v2/blobs"), None);
    }

    #[test]
    fn replica_ids() {
        assert_eq!(replica_id("dtr-registry-a1b2").as_deref(), Some("a1b2"));
        assert_eq!(replica_id("dtr-registry-nfs-a1b2").as_deref(), Some("a1b2"));
        assert_eq!(replica_id("volume"), None);
    }
}
