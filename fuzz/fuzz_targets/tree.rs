//! Trees (FORMAT.md, "Trees"): a tree blob's plaintext, as `Repository::load_tree` decodes
//! it, then what the walkers and restores ask of it. What decodes encodes and decodes to
//! the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::tree::Tree;
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = serde_json::from_slice::<Tree>(data) else {
        return;
    };
    let json = serde_json::to_vec(&tree).expect("a tree serializes");
    let again: Tree = serde_json::from_slice(&json).expect("a serialized tree parses");
    assert_eq!(again, tree);
    for node in &tree.nodes {
        let _ = tree.find(&node.name.0);
        let meta = node.meta();
        assert_eq!(meta.name, node.name.0);
        let _ = node.blobs().count();
        let _ = node.name.lossy();
    }
});
