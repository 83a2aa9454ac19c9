//! NFS replies: a server's reply to each procedure the NFS client calls (record mark, RPC
//! reply header, result), decoded as `stowage_nfs::client` decodes it. Decoded results pack
//! and decode again to the same bytes (`stowage_nfs::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    // nfs3_types reserves what a length announces before reading it (FUZZING.md, "Found,
    // not fixed here"): an opaque's bytes, zeroed (up to 4 GiB), and a `Vec<u32>`'s capacity
    // (up to 16 GiB, the MOUNT reply's auth flavors). Both are mapped lazily and the read
    // that follows fails on the 4 MiB record `client::Tcp` allows.
    stowage_fuzz::allow_allocations_up_to(16 << 30);
    let _ = stowage_nfs::fuzzing::nfs_reply(data);
});
