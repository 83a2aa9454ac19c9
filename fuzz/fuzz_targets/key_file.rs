//! Key files (FORMAT.md, "Keys"): a `keys/<id>` object's JSON as `Repository::open` parses
//! it, and the argon2 parameter bounds it must pass before any derivation (argon2 is never
//! run with the fuzzed parameters: out of bounds, the derivation must refuse them before it
//! starts). Then the key material after authentication: the input sealed under a wrapping
//! key of fixed, cheap parameters and opened by `KeyFile::unwrap`.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
// The bounded allocator (fuzz/src/lib.rs).
use stowage_engine::format::crypto::{KdfParams, KeyFile, Keys};
use stowage_engine::format::id::Id;
use stowage_engine::fuzzing::{kdf_check_bounds, kdf_derive};
use stowage_fuzz as _;

const PASSWORD: &[u8] = b"fuzz";

/// The fixed parameters of the key-material target: argon2id at its minimum (8 KiB, 1 pass).
fn cheap() -> KdfParams {
    KdfParams {
        algorithm: "argon2id".into(),
        m_cost: 8,
        t_cost: 1,
        p_cost: 1,
        salt: B64.encode(b"stowage fuzz salt"),
    }
}

fn wrapping() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| kdf_derive(&cheap(), PASSWORD).expect("cheap parameters derive"))
}

/// The config hash the seeds' key material is bound to.
fn config_hash() -> Id {
    Id::hash_of(b"stowage fuzz config")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(file) = serde_json::from_slice::<KeyFile>(rest) else {
            return;
        };
        let k = &file.kdf;
        match kdf_check_bounds(k) {
            Ok(()) => {
                // FORMAT.md's bounds: 1 GiB, 32 passes, 16 lanes, 4 GiB-passes.
                assert!(k.m_cost <= 1 << 20 && (1..=32).contains(&k.t_cost));
                assert!((1..=16).contains(&k.p_cost));
                assert!(u64::from(k.m_cost) * u64::from(k.t_cost) <= 4 << 20);
            }
            // Refused before any work: this returns at once, whatever the costs.
            Err(_) => assert!(kdf_derive(k, PASSWORD).is_err()),
        }
        let again: KeyFile = serde_json::from_slice(&file.to_json()).expect("a key file parses");
        assert_eq!(again.kdf, file.kdf);
        assert_eq!(
            (again.created, &again.host, &again.data),
            (file.created, &file.host, &file.data)
        );
    } else {
        let file = KeyFile {
            created: chrono::DateTime::UNIX_EPOCH,
            host: "fuzz".into(),
            kdf: cheap(),
            data: B64.encode(wrapping().seal(rest)),
        };
        if let Ok(Some(keys)) = file.unwrap(PASSWORD, config_hash()) {
            let _ = keys.blob_id(b"x");
        }
    }
});
