//! Tar archives in and out (FORMAT.md, "Tar snapshots"): [`walk`] reads a tar stream as its
//! exact header blocks and entry contents; [`import`] keeps a tar (a DTR metadata backup, an
//! image tar) as a snapshot of its entries plus a skeleton, and writes the exact original tar
//! back; [`volume`] streams a directory snapshot out as the tar `tar -cf` would make of it.
//!
//! May use: `format`, `repo` (packer, commit, reader, walker) and `registry`'s path grammar.

pub mod import;
pub mod volume;
pub(crate) mod walk;
