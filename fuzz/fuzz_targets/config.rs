//! The `config` object (FORMAT.md, "Config"), read as `Repository::open` reads it: its
//! `version` first, then the whole config, then the chunker parameters checked. What
//! decodes encodes and decodes to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::config::{Config, FORMAT_VERSION};
use stowage_fuzz as _;

#[derive(serde::Deserialize)]
struct Version {
    version: u32,
}

fuzz_target!(|data: &[u8]| {
    let Ok(version) = serde_json::from_slice::<Version>(data) else {
        return;
    };
    if version.version > FORMAT_VERSION {
        return;
    }
    let Ok(config) = serde_json::from_slice::<Config>(data) else {
        return;
    };
    assert_eq!(config.version, version.version);
    let valid = config.chunker.validate().is_ok();
    let again: Config = serde_json::from_slice(&config.to_json()).expect("a config parses");
    assert_eq!(again, config);
    if valid {
        let c = config.chunker;
        assert!(c.min <= c.avg && c.avg <= c.max);
    }
});
