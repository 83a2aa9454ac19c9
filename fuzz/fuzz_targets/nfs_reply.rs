//! NFS replies: a server's reply to each procedure the NFS client calls (record mark, RPC
//! reply header, result), decoded as `stowage_nfs::client` decodes it. Decoded results pack
//! and decode again to the same bytes (`stowage_nfs::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let _ = stowage_nfs::fuzzing::nfs_reply(data);
});
