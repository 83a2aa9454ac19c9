//! Snapshots (FORMAT.md, "Snapshots"): a snapshot object's plaintext, as
//! `Repository::load_json` decodes it. What decodes encodes and decodes to the same
//! snapshot (the one float, `duration_secs`, to within rounding: serde_json parses floats
//! to within an ulp unless built with `float_roundtrip`).
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::snapshot::Snapshot;
use stowage_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let json = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
    let mut again: Snapshot = serde_json::from_slice(&json).expect("a serialized snapshot parses");
    let (a, b) = (snapshot.summary.duration_secs, again.summary.duration_secs);
    assert!(
        a == b || (a - b).abs() <= a.abs().max(b.abs()) * 4.0 * f64::EPSILON,
        "{a} became {b}"
    );
    again.summary.duration_secs = a;
    assert_eq!(again, snapshot);
    let _ = snapshot.extra_blobs().len();
    let _ = snapshot.origin(stowage_engine::Id([0; 32]));
});
