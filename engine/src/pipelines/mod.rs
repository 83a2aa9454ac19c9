//! The pipelines: one entry function per command that reads as the steps of the job
//! (backup, restore, check, repair, copy, prune, forget, dump, stats, optimize, bench). The steps
//! that are the repository's own (packing, committing, reading, walking trees) live in
//! `repo/`, so each pipeline here is the job, not its plumbing.
//!
//! May use: everything below (`format`, `gzip`, `repo`, `registry`, `tar`); pipelines do not
//! import one another, except that `optimize` and `tar` share restore's summary type.

pub mod backup;
pub mod bench;
pub mod check;
pub mod copy;
pub mod dump;
pub mod forget;
pub mod optimize;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod stats;
