//! Tar archives in and out (FORMAT.md, "Tar snapshots"): [`walk`] reads a tar stream as its
//! exact header blocks and entry contents; [`import`] keeps a tar (a DTR metadata backup, an
//! image tar) as a snapshot of its entries plus a skeleton, and [`original`] writes the exact
//! original tar back; [`volume`] streams a directory snapshot out as the tar `tar -cf` would
//! make of it. This file holds what `import` and `original` share: the path a tar entry has
//! in the tree ([`normalize`]) and the walker's errors as the engine's.
//!
//! May use: `format`, `repo` (packer, commit, reader, walker) and `registry`'s path grammar.

use crate::error::{Error, Result};
use walk::TarError;

pub mod import;
pub mod original;
pub mod volume;
pub(crate) mod walk;

impl From<TarError> for Error {
    fn from(e: TarError) -> Self {
        match e {
            TarError::Io(e) => Error::io("the tar stream", e),
            e => Error::bad_input("the tar", e.to_string()),
        }
    }
}

/// The path a tar entry names, as the tree holds it: leading `/` and `./` dropped, trailing
/// `/` dropped. `None` for the archive's own `./` entry; an error for `..` and for a NUL
/// byte (a PAX path may hold one; no filesystem name can, so no restore could write it).
pub fn normalize(path: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
    if path.contains(&0) {
        return Err(Error::bad_input(
            "the tar",
            format!(
                "entry {:?} has a NUL byte in its name",
                String::from_utf8_lossy(path)
            ),
        ));
    }
    let mut parts = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::bad_input(
                    "the tar",
                    format!(
                        "entry {:?} leaves its directory (..)",
                        String::from_utf8_lossy(path)
                    ),
                ))
            }
            _ => parts.push(part.to_vec()),
        }
    }
    Ok((!parts.is_empty()).then_some(parts))
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use crate::error::ErrorKind;

    #[test]
    fn paths_are_normalized_and_hostile_ones_refused() {
        let parts = normalize(b"./a//b/").unwrap().unwrap();
        assert_eq!(parts, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(normalize(b"./").unwrap(), None);
        for hostile in [&b"a/../../etc"[..], b"a/b\0c", b"\0"] {
            let e = normalize(hostile).expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        }
    }
}
