//! The tar walker (FORMAT.md, "Tar snapshots"): a tar stream read as `backup_tar` reads it,
//! every entry's path and hard-link target normalised as the import does. A stream the
//! walker accepts to its end is exactly its skeleton and contents again.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::fuzzing::{tar_normalize, Item, TarWalker};
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let mut walker = TarWalker::new(data);
    let mut rebuilt = Vec::with_capacity(data.len());
    loop {
        let entry = match walker.next_item() {
            Err(_) => return,
            Ok(Item::End(first)) => {
                rebuilt.extend_from_slice(&first);
                walker
                    .rest()
                    .read_to_end(&mut rebuilt)
                    .expect("a slice reads");
                break;
            }
            Ok(Item::Entry(entry)) => entry,
        };
        rebuilt.extend_from_slice(&entry.raw);
        let _ = tar_normalize(&entry.path);
        if let Some(link) = &entry.link {
            let _ = tar_normalize(link);
        }
        let _ = (u32::try_from(entry.uid), u32::try_from(entry.gid));
        let before = rebuilt.len();
        if walker
            .content(entry.size)
            .read_to_end(&mut rebuilt)
            .is_err()
        {
            return;
        }
        if ((rebuilt.len() - before) as u64) < entry.size {
            // The stream ended inside the content: the padding read must fail.
            assert!(walker.padding(entry.size).is_err() || entry.size % 512 == 0);
            return;
        }
        match walker.padding(entry.size) {
            Ok(pad) => rebuilt.extend_from_slice(&pad),
            Err(_) => return,
        }
    }
    assert_eq!(rebuilt, data, "skeleton and contents are not the tar");
});
