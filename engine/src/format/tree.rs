//! Trees (FORMAT.md, "Trees"): a directory is a blob holding its entries as JSON, so an
//! unchanged subtree is the same blob in every snapshot and costs nothing.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stowage_backends::source::{EntryKind, EntryMeta, Timestamp};

use crate::format::id::Id;

/// Files up to this size are kept inside their tree (registry link files are 71 bytes).
pub const INLINE_MAX: u64 = 512;

/// A file or directory name: raw bytes, written as a JSON string when it is UTF-8 and as
/// `{"b64": "..."}` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(pub Vec<u8>);

impl Name {
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NameRepr {
    Text(String),
    Raw { b64: String },
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => NameRepr::Text(text.to_string()),
            Err(_) => NameRepr::Raw {
                b64: B64.encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameRepr::deserialize(d)? {
            NameRepr::Text(t) => Ok(Name(t.into_bytes())),
            NameRepr::Raw { b64 } => B64.decode(b64).map(Name).map_err(serde::de::Error::custom),
        }
    }
}

/// Bytes written as base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineBytes(pub Vec<u8>);

impl Serialize for InlineBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for InlineBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s)
            .map(InlineBytes)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// How a file's bytes are kept. New encodings are added as new variants; readers refuse
/// variants they do not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// The file is the concatenation of these data blobs.
    Chunks(Vec<Id>),
    /// The file's bytes, kept in the tree.
    Inline(InlineBytes),
    /// A gzip file kept as its plaintext and a recipe that re-creates its exact bytes.
    Gzip(GzipContent),
}

/// A gzip file (FORMAT.md, "Gzip content"): the recipe's header and re-created deflate
/// pieces, then the tail, are the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GzipContent {
    /// The recipe ([`crate::gzip::Recipe`]), as data blobs.
    pub recipe: Vec<Id>,
    /// The plaintext of the re-created pieces, as data blobs.
    pub plain: Vec<Id>,
    /// The bytes after the re-created pieces (the gzip trailer, or the rest of a stream
    /// that could not be re-created), as data blobs.
    pub tail: Vec<Id>,
}

impl Content {
    /// The data blobs the content refers to.
    pub fn blobs(&self) -> impl Iterator<Item = &Id> {
        let lists: [&[Id]; 3] = match self {
            Content::Chunks(ids) => [ids, &[], &[]],
            Content::Inline(_) => [&[], &[], &[]],
            Content::Gzip(g) => [&g.recipe, &g.plain, &g.tail],
        };
        lists.into_iter().flatten()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Name,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub ctime: i64,
    pub ctime_ns: u32,
    pub inode: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
}

impl Node {
    /// A node with `meta`'s metadata and no content yet. `Other` entries have no node.
    pub fn from_meta(meta: &EntryMeta) -> Option<Self> {
        let kind = match meta.kind {
            EntryKind::File => NodeKind::File,
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink => NodeKind::Symlink,
            EntryKind::Other => return None,
        };
        Some(Node {
            name: Name(meta.name.clone()),
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime.secs,
            mtime_ns: meta.mtime.nanos,
            ctime: meta.ctime.secs,
            ctime_ns: meta.ctime.nanos,
            inode: meta.inode,
            size: meta.size,
            content: None,
            subtree: None,
            target: meta.symlink_target.clone().map(Name),
        })
    }

    /// The metadata a restore target applies.
    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            name: self.name.0.clone(),
            kind: match self.kind {
                NodeKind::File => EntryKind::File,
                NodeKind::Dir => EntryKind::Dir,
                NodeKind::Symlink => EntryKind::Symlink,
            },
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: Timestamp {
                secs: self.mtime,
                nanos: self.mtime_ns,
            },
            ctime: Timestamp {
                secs: self.ctime,
                nanos: self.ctime_ns,
            },
            inode: self.inode,
            symlink_target: self.target.as_ref().map(|t| t.0.clone()),
        }
    }

    /// The data blobs this node's content refers to.
    pub fn blobs(&self) -> impl Iterator<Item = &Id> {
        self.content.iter().flat_map(Content::blobs)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_and_inline_bytes_round_trip() {
        let meta = EntryMeta {
            name: vec![b'a', 0xff, b'b'],
            kind: EntryKind::File,
            mode: 0o640,
            uid: 1,
            gid: 2,
            size: 3,
            mtime: Timestamp {
                secs: -5,
                nanos: 999_999_999,
            },
            ctime: Timestamp { secs: 7, nanos: 1 },
            inode: 42,
            symlink_target: None,
        };
        let mut node = Node::from_meta(&meta).expect("file");
        node.content = Some(Content::Inline(InlineBytes(vec![0, 1, 2])));
        let tree = Tree { nodes: vec![node] };
        let json = serde_json::to_vec(&tree).expect("json");
        let back: Tree = serde_json::from_slice(&json).expect("parse");
        assert_eq!(back, tree);
        assert_eq!(back.nodes[0].meta(), meta);
        assert!(back.find(&[b'a', 0xff, b'b']).is_some());
    }
}
