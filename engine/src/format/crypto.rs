//! Encryption and identifiers (FORMAT.md, "Encryption" and "Keys").
//!
//! AES-GCM comes from `ring`, whose assembly uses VAES/VPCLMULQDQ where the CPU has them
//! (several times RustCrypto's `aes-gcm` here). Every object but `config` is sealed with
//! AES-256-GCM under the master encryption key:
//! `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with a fresh random nonce each time.
//! Blob ids are BLAKE3 keyed with the master id key, so ids reveal nothing about content.
//! The master keys are stored in `keys/<id>` files, sealed with a key derived from a password
//! by argon2id.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::id::Id;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed object has beyond its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The master keys of a repository.
#[derive(Clone)]
pub struct Keys {
    cipher: Arc<LessSafeKey>,
    /// The bytes behind `cipher`, kept so the keys can be wrapped again for a repository
    /// that shares them ([`Keys::raw`]); never exposed.
    encrypt: [u8; 32],
    id_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct KeyMaterial {
    encrypt: String,
    id: String,
    /// BLAKE3 of the repository's `config` object, binding the key to that config.
    config: Id,
}

impl Keys {
    pub fn random() -> Self {
        Self::from_parts(rand::random(), rand::random())
    }

    fn from_parts(encrypt: [u8; 32], id_key: [u8; 32]) -> Self {
        Keys {
            cipher: cipher(&encrypt),
            encrypt,
            id_key,
        }
    }

    /// The key bytes, for wrapping them in a key file of another repository that shares
    /// them (`stowage copy`). [`RawKeys`] only goes into [`KeyFile::wrap`].
    pub fn raw(&self) -> RawKeys {
        RawKeys {
            encrypt: self.encrypt,
            id: self.id_key,
        }
    }

    /// Whether `other` holds the same key material, so that both give the same blob ids and
    /// chunk boundaries and can open each other's sealed blobs. Compares every byte (no early
    /// exit on the first difference).
    pub fn same_material(&self, other: &Keys) -> bool {
        let diff = self
            .encrypt
            .iter()
            .chain(&self.id_key)
            .zip(other.encrypt.iter().chain(&other.id_key))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The seed that keys the chunker's gear table, so chunk boundaries do not reveal
    /// content either.
    pub fn chunker_seed(&self) -> u64 {
        let derived = blake3::derive_key("stowage 2026 chunker seed", &self.id_key);
        u64::from_le_bytes(derived[..8].try_into().expect("8 bytes"))
    }

    /// Keys from fixed bytes, for tests that pin the format (`golden.rs`).
    #[cfg(test)]
    pub(crate) fn from_bytes(encrypt: [u8; 32], id_key: [u8; 32]) -> Self {
        Self::from_parts(encrypt, id_key)
    }

    /// Seals `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        let nonce = fresh_nonce();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a sealed object; `what` names it in the error when authentication fails.
    pub fn open(&self, sealed: &[u8], what: impl FnOnce() -> String) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        self.open_into(sealed, what, &mut plain)?;
        Ok(plain)
    }

    /// [`Keys::open`] into `plain` (replacing what it held), so a caller opening many
    /// objects reuses one buffer.
    pub fn open_into(
        &self,
        sealed: &[u8],
        what: impl FnOnce() -> String,
        plain: &mut Vec<u8>,
    ) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(what(), "too short to be a sealed object"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
        plain.clear();
        plain.extend_from_slice(body);
        let len = self
            .cipher
            .open_in_place(nonce, Aad::empty(), plain)
            .map_err(|_| Error::corrupt(what(), "authentication failed (damaged or tampered)"))?
            .len();
        plain.truncate(len);
        Ok(())
    }
}

/// A random nonce; in unit tests, the next one of [`test_nonces::counting`] when a test set
/// that up on this thread.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    #[cfg(test)]
    if let Some(nonce) = test_nonces::next() {
        return nonce;
    }
    rand::random()
}

/// Deterministic nonces for unit tests that pin sealed bytes (`golden.rs`). Test builds only:
/// a release build has no such hook.
#[cfg(test)]
pub(crate) mod test_nonces {
    use std::cell::Cell;

    use super::NONCE_LEN;

    thread_local! {
        static NEXT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Until the guard is dropped, seals on this thread take the nonces `start`,
    /// `start + 1`, ... (4 zero bytes, then the counter big-endian); then they are random
    /// again (or continue an enclosing guard's count).
    #[must_use = "the nonces are counted only while the guard lives"]
    pub(crate) fn counting(start: u64) -> Counting {
        Counting(NEXT.with(|n| n.replace(Some(start))))
    }

    pub(crate) struct Counting(Option<u64>);

    impl Drop for Counting {
        fn drop(&mut self) {
            NEXT.with(|n| n.set(self.0));
        }
    }

    pub(super) fn next() -> Option<[u8; NONCE_LEN]> {
        let counter = NEXT.with(|n| {
            let current = n.get();
            n.set(current.map(|c| c + 1));
            current
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        Some(nonce)
    }
}

fn cipher(key: &[u8; 32]) -> Arc<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key");
    Arc::new(LessSafeKey::new(unbound))
}

/// The most memory a key file's argon2id may ask for, in KiB (1 GiB; stowage writes 19 MiB).
const MAX_M_COST: u32 = 1 << 20;
/// The most passes (stowage writes 2).
const MAX_T_COST: u32 = 32;
/// The most lanes (stowage writes 1).
const MAX_P_COST: u32 = 16;
/// The most memory times passes, in KiB-passes (4 GiB: a few seconds on a small machine).
const MAX_KDF_WORK: u64 = 4 << 20;

/// argon2id parameters, stored with each key file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
}

impl KdfParams {
    /// OWASP's recommended argon2id minimum: 19 MiB, 2 passes, 1 lane.
    pub fn recommended() -> Self {
        let salt: [u8; 16] = rand::random();
        KdfParams {
            algorithm: "argon2id".into(),
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            salt: B64.encode(salt),
        }
    }

    /// Refuses parameters no stowage writes and that would exhaust the machine: a key file
    /// comes from the store, and whoever can write there could ask for 4 TiB of memory or
    /// a billion passes before the password is even tried.
    pub(crate) fn check_bounds(&self) -> Result<()> {
        let bounded = (1..=MAX_P_COST).contains(&self.p_cost)
            && (1..=MAX_T_COST).contains(&self.t_cost)
            && self.m_cost <= MAX_M_COST
            && u64::from(self.m_cost) * u64::from(self.t_cost) <= MAX_KDF_WORK;
        match bounded {
            true => Ok(()),
            false => Err(Error::corrupt(
                "key file",
                format!(
                    "argon2 parameters out of bounds (m_cost {} KiB, t_cost {}, p_cost {}; at \
                     most {MAX_M_COST} KiB, {MAX_T_COST} passes, {MAX_P_COST} lanes and \
                     {MAX_KDF_WORK} KiB-passes in all)",
                    self.m_cost, self.t_cost, self.p_cost
                ),
            )),
        }
    }

    /// The wrapping key for `password`: sealing keys only (no id key).
    pub(crate) fn derive(&self, password: &[u8]) -> Result<Keys> {
        if self.algorithm != "argon2id" {
            return Err(Error::corrupt(
                "key file",
                format!("unknown KDF {:?}", self.algorithm),
            ));
        }
        self.check_bounds()?;
        let salt = B64
            .decode(&self.salt)
            .map_err(|_| Error::corrupt("key file", "salt is not base64"))?;
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::corrupt("key file", format!("bad argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(password, &salt, &mut key)
            .map_err(|e| Error::corrupt("key file", format!("argon2: {e}")))?;
        Ok(Keys::from_parts(key, [0; 32]))
    }
}

/// The JSON of a `keys/<id>` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub kdf: KdfParams,
    /// base64 of the key material sealed with the password-derived key.
    pub data: String,
}

impl KeyFile {
    /// Wraps the master keys (bound to the config with BLAKE3 `config_hash`) under `password`.
    pub fn wrap(raw_keys: &RawKeys, config_hash: Id, password: &[u8], host: &str) -> Result<Self> {
        Self::wrap_with(
            raw_keys,
            config_hash,
            password,
            host,
            KdfParams::recommended(),
            chrono::Utc::now(),
        )
    }

    /// [`KeyFile::wrap`] with given KDF parameters (salt included) and creation time.
    pub(crate) fn wrap_with(
        raw_keys: &RawKeys,
        config_hash: Id,
        password: &[u8],
        host: &str,
        kdf: KdfParams,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self> {
        let wrapping = kdf.derive(password)?;
        let material = KeyMaterial {
            encrypt: B64.encode(raw_keys.encrypt),
            id: B64.encode(raw_keys.id),
            config: config_hash,
        };
        let plain = serde_json::to_vec(&material).expect("key material serializes");
        Ok(KeyFile {
            created,
            host: host.to_string(),
            kdf,
            data: B64.encode(wrapping.seal(&plain)),
        })
    }

    /// The bytes of the `keys/<id>` object.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    /// Opens the master keys with `password`; `None` when the password does not fit.
    /// Fails when the key does not belong to the config with hash `config_hash`.
    pub fn unwrap(&self, password: &[u8], config_hash: Id) -> Result<Option<Keys>> {
        let wrapping = self.kdf.derive(password)?;
        let sealed = B64
            .decode(&self.data)
            .map_err(|_| Error::corrupt("key file", "data is not base64"))?;
        let Ok(plain) = wrapping.open(&sealed, String::new) else {
            return Ok(None);
        };
        let material: KeyMaterial = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt("key file", format!("key material: {e}")))?;
        if material.config != config_hash {
            return Err(Error::corrupt(
                "config",
                "does not match the config the key was made for (replaced or tampered)",
            ));
        }
        let decode = |s: &str| -> Result<[u8; 32]> {
            B64.decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| Error::corrupt("key file", "key is not 32 base64 bytes"))
        };
        Ok(Some(Keys::from_parts(
            decode(&material.encrypt)?,
            decode(&material.id)?,
        )))
    }
}

/// Master key bytes, kept only until they are wrapped in a key file.
pub struct RawKeys {
    encrypt: [u8; 32],
    id: [u8; 32],
}

impl RawKeys {
    pub fn generate() -> (Keys, RawKeys) {
        let raw = RawKeys {
            encrypt: rand::random(),
            id: rand::random(),
        };
        (Keys::from_parts(raw.encrypt, raw.id), raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let keys = Keys::random();
        let sealed = keys.seal(b"registry secrets");
        assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD);
        let opened = keys.open(&sealed, || "x".into()).expect("open");
        assert_eq!(opened, b"registry secrets");
        let mut damaged = sealed.clone();
        damaged[20] ^= 1;
        assert!(matches!(
            keys.open(&damaged, || "x".into()),
            Err(Error::Corrupt { .. })
        ));
        assert!(Keys::random().open(&sealed, || "x".into()).is_err());
    }

    #[test]
    fn key_file_opens_with_its_password_only() {
        let (keys, raw) = RawKeys::generate();
        let config = Id::hash_of(b"config");
        let file = KeyFile::wrap(&raw, config, b"pw", "host").expect("wrap");
        assert!(file.unwrap(b"other", config).expect("unwrap").is_none());
        let opened = file.unwrap(b"pw", config).expect("unwrap").expect("opens");
        assert_eq!(opened.blob_id(b"a"), keys.blob_id(b"a"));
        assert!(file.unwrap(b"pw", Id::hash_of(b"other config")).is_err());
    }

    #[test]
    fn hostile_kdf_parameters_are_refused_before_any_work() {
        let (_, raw) = RawKeys::generate();
        let config = Id::hash_of(b"config");
        let file = KeyFile::wrap(&raw, config, b"pw", "host").expect("wrap");
        // Tried, these would abort the process (4 GB of memory) or run for days.
        for (m_cost, t_cost, p_cost) in [
            (4_000_000_000, 2, 1),
            (19 * 1024, u32::MAX, 1),
            (19 * 1024, 0, 1),
            (19 * 1024, 2, 0),
            (19 * 1024, 2, 1 << 20),
            (MAX_M_COST, MAX_T_COST, 1),
        ] {
            let mut hostile = file.clone();
            hostile.kdf.m_cost = m_cost;
            hostile.kdf.t_cost = t_cost;
            hostile.kdf.p_cost = p_cost;
            let e = hostile.unwrap(b"pw", config).expect_err("refused");
            assert_eq!(e.kind(), crate::error::ErrorKind::Damaged);
            assert!(e.to_string().contains("out of bounds"), "{e}");
        }
        // What stowage writes stays inside them.
        assert!(file.unwrap(b"pw", config).expect("unwrap").is_some());
    }

    #[test]
    fn counted_nonces_only_while_the_guard_lives() {
        let keys = Keys::random();
        let counted = |start| {
            let _nonces = test_nonces::counting(start);
            (keys.seal(b"x"), keys.seal(b"x"))
        };
        let (a, b) = counted(7);
        assert_eq!(&a[..NONCE_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&b[..NONCE_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]);
        assert_eq!(counted(7), (a.clone(), b));
        assert_ne!(keys.seal(b"x")[..NONCE_LEN], a[..NONCE_LEN]);
    }

    #[test]
    fn blob_ids_are_keyed() {
        assert_ne!(Keys::random().blob_id(b"a"), Keys::random().blob_id(b"a"));
    }

    #[test]
    fn raw_keys_rewrapped_give_the_same_material() {
        let keys = Keys::random();
        let config = Id::hash_of(b"another config");
        let file = KeyFile::wrap(&keys.raw(), config, b"other pw", "host").expect("wrap");
        let opened = file
            .unwrap(b"other pw", config)
            .expect("unwrap")
            .expect("opens");
        assert!(opened.same_material(&keys));
        assert_eq!(opened.blob_id(b"a"), keys.blob_id(b"a"));
        let sealed = keys.seal(b"blob");
        assert_eq!(opened.open(&sealed, String::new).expect("open"), b"blob");
        assert!(!Keys::random().same_material(&keys));
    }
}
