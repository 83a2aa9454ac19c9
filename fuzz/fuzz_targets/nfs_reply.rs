//! NFS replies: a server's reply to each procedure the NFS client calls (record mark, RPC
//! reply header, result), decoded as `stowage_nfs::client` decodes it. Decoded results pack
//! and decode again to the same bytes (`stowage_nfs::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    // nfs3_types reserves an opaque's announced length, zeroed, before reading it (up to
    // 4 GiB; FUZZING.md): mapped lazily, and the read then fails on the 4 MiB record
    // `client::Tcp` allows. Every other allocation keeps the 1 GiB bound.
    stowage_fuzz::allow_zeroed_allocations_up_to(1 << 32);
    let _ = stowage_nfs::fuzzing::nfs_reply(data);
});
