//! Entry points for the fuzz targets (`fuzz/`, FUZZING.md): the decoders of untrusted bytes
//! that are not public, as thin wrappers. Not an API: hidden from the docs, and it may change
//! with any commit.

use crate::error::Result;
use crate::format::crypto::{KdfParams, Keys};

/// The tar walker `backup_tar` and `write_original_tar` read tar streams with.
pub use crate::tar::walk::{ContentReader, Entry, Item, Kind, TarError, TarWalker};

/// The path a tar entry has in the tree ([`crate::tar::normalize`]), as the tar import
/// applies it to every entry's path and hard-link target.
pub fn tar_normalize(path: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
    crate::tar::normalize(path)
}

/// The bounds a key file's argon2 parameters must keep before any derivation starts.
pub fn kdf_check_bounds(kdf: &KdfParams) -> Result<()> {
    kdf.check_bounds()
}

/// The wrapping key a key file's parameters derive from `password` (argon2id: only call it
/// with parameters the caller chose, or ones [`kdf_check_bounds`] refused).
pub fn kdf_derive(kdf: &KdfParams, password: &[u8]) -> Result<Keys> {
    kdf.derive(password)
}
