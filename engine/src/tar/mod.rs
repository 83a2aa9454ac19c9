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
/// `/` dropped. `None` for the archive's own `./` entry; an error for `..`.
pub fn normalize(path: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
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
