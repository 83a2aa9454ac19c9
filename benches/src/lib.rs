//! Inputs for stowage's benchmarks: deterministic pseudo-text, gzip "layers" deflated from
//! it, and a small registry v2 volume on disk built from those layers. Generating them is
//! never timed; the benchmarks themselves live in `benches/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// xorshift64*: fast, deterministic, and good enough to make text.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`, for `n` below 2^32.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

const VOCABULARY: u32 = 4096;

/// Line-oriented text over a fixed vocabulary with a skewed word frequency, numbers, hex ids
/// and paths: roughly what configuration files, scripts and logs inside an image look like.
struct TextGen {
    rng: Rng,
    words: Vec<Vec<u8>>,
}

impl TextGen {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let consonants = b"bcdfghklmnprstvz";
        let vowels = b"aeiou";
        let words = (0..VOCABULARY)
            .map(|_| {
                let syllables = 1 + rng.below(4);
                let mut word = Vec::new();
                for _ in 0..syllables {
                    word.push(consonants[rng.below(consonants.len() as u32) as usize]);
                    word.push(vowels[rng.below(vowels.len() as u32) as usize]);
                }
                word
            })
            .collect();
        TextGen { rng, words }
    }

    /// A word index skewed towards the start of the vocabulary, as word use is in text.
    fn word(&mut self) -> &[u8] {
        let i = self.rng.below(VOCABULARY) * self.rng.below(VOCABULARY) / VOCABULARY;
        &self.words[i as usize]
    }

    fn line(&mut self, out: &mut Vec<u8>) {
        let indent = self.rng.below(4) as usize * 2;
        out.resize(out.len() + indent, b' ');
        let tokens = 4 + self.rng.below(11);
        for t in 0..tokens {
            if t > 0 {
                match self.rng.below(10) {
                    0 => out.extend_from_slice(b", "),
                    1 => out.push(b'='),
                    _ => out.push(b' '),
                }
            }
            match self.rng.below(100) {
                0..=79 => {
                    let word = self.word().to_vec();
                    out.extend_from_slice(&word);
                }
                80..=87 => {
                    let n = self.rng.below(1_000_000);
                    write!(out, "{n}").expect("writing to memory");
                }
                88..=92 => {
                    for _ in 0..12 {
                        out.push(b"0123456789abcdef"[self.rng.below(16) as usize]);
                    }
                }
                _ => {
                    for _ in 0..1 + self.rng.below(3) {
                        out.push(b'/');
                        let word = self.word().to_vec();
                        out.extend_from_slice(&word);
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

/// `len` bytes of pseudo-text.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut gen = TextGen::new(seed);
    let mut out = Vec::with_capacity(len + 256);
    while out.len() < len {
        gen.line(&mut out);
    }
    out.truncate(len);
    out
}

/// A gzip stream (level 6, as `docker push` writes layers) of pseudo-text, about `size`
/// bytes long.
pub fn gzip_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut gen = TextGen::new(seed);
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(size + (1 << 20)),
        flate2::Compression::new(6),
    );
    let mut piece = Vec::with_capacity(1 << 17);
    while encoder.get_ref().len() < size {
        piece.clear();
        while piece.len() < 1 << 16 {
            gen.line(&mut piece);
        }
        encoder.write_all(&piece).expect("writing to memory");
    }
    encoder.finish().expect("writing to memory")
}

/// A registry volume written by [`write_volume`].
#[derive(Debug, Clone)]
pub struct Volume {
    /// The volume directory (`dtr-registry-<replica>`), the root to back up.
    pub root: PathBuf,
    pub files: u64,
    /// Bytes in all files.
    pub bytes: u64,
    /// Files under `blobs/` (each named by its sha256, so backup and restore verify it).
    pub blobs: u64,
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct VolumeWriter {
    v2: PathBuf,
    volume: Volume,
}

impl VolumeWriter {
    /// Writes a file unless it is there already (images share layers and their links);
    /// returns whether it was new.
    fn file(&mut self, rel: &str, data: &[u8]) -> io::Result<bool> {
        let path = self.v2.join(rel);
        if path.exists() {
            return Ok(false);
        }
        fs::create_dir_all(path.parent().expect("paths have a parent"))?;
        fs::write(path, data)?;
        self.volume.files += 1;
        self.volume.bytes += data.len() as u64;
        Ok(true)
    }

    /// Stores a blob under its digest and returns the digest's hex.
    fn blob(&mut self, data: &[u8]) -> io::Result<String> {
        let hex = sha256_hex(data);
        if self.file(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]), data)? {
            self.volume.blobs += 1;
        }
        Ok(hex)
    }

    fn link(&mut self, rel: &str, hex: &str) -> io::Result<()> {
        self.file(rel, format!("sha256:{hex}").as_bytes()).map(drop)
    }
}

/// Writes a registry v2 volume under `parent`: the given gzip layers as blobs, and images
/// pushing them (a config and a manifest blob each, plus the small link files of
/// `repositories/`). Layer 0 is a base layer every image shares.
pub fn write_volume(parent: &Path, layers: &[Vec<u8>]) -> io::Result<Volume> {
    let root = parent.join("dtr-registry-benchbench01");
    let mut w = VolumeWriter {
        v2: root.join("_data/docker/registry/v2"),
        volume: Volume {
            root,
            files: 0,
            bytes: 0,
            blobs: 0,
        },
    };
    let repositories = ["platform/base", "platform/api", "tools/ci"];
    for image in 0..layers.len() {
        let repo = repositories[image % repositories.len()];
        let used: Vec<usize> = if image == 0 { vec![0] } else { vec![0, image] };
        let mut layer_refs = Vec::new();
        for &l in &used {
            let hex = w.blob(&layers[l])?;
            w.link(
                &format!("repositories/{repo}/_layers/sha256/{hex}/link"),
                &hex,
            )?;
            layer_refs.push(format!(
                r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"sha256:{hex}"}}"#,
                layers[l].len()
            ));
        }
        let history = String::from_utf8(text(1000 + image as u64, 1500)).expect("ASCII");
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]}},"rootfs":{{"type":"layers"}},"history":{history:?}}}"#
        );
        let config_hex = w.blob(config.as_bytes())?;
        w.link(
            &format!("repositories/{repo}/_layers/sha256/{config_hex}/link"),
            &config_hex,
        )?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"sha256:{config_hex}"}},"layers":[{}]}}"#,
            config.len(),
            layer_refs.join(",")
        );
        let manifest_hex = w.blob(manifest.as_bytes())?;
        let tag = format!("v1.{image}");
        let manifests = format!("repositories/{repo}/_manifests");
        w.link(
            &format!("{manifests}/revisions/sha256/{manifest_hex}/link"),
            &manifest_hex,
        )?;
        w.link(
            &format!("{manifests}/tags/{tag}/current/link"),
            &manifest_hex,
        )?;
        w.link(
            &format!("{manifests}/tags/{tag}/index/sha256/{manifest_hex}/link"),
            &manifest_hex,
        )?;
    }
    Ok(w.volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_deterministic_and_sized() {
        assert_eq!(text(3, 10_000), text(3, 10_000));
        assert_ne!(text(3, 10_000), text(4, 10_000));
        assert_eq!(text(3, 12_345).len(), 12_345);
        let layer = gzip_layer(5, 100_000);
        assert!(layer.len() >= 100_000 && layer.len() < 200_000);
        assert_eq!(&layer[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn volume_has_blobs_and_links() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layers = [gzip_layer(1, 50_000), gzip_layer(2, 30_000)];
        let v = write_volume(dir.path(), &layers).expect("volume");
        // 2 layers + 2 configs + 2 manifests; per image a link for each layer and its config,
        // and 3 for its manifest and tag.
        assert_eq!(v.blobs, 6);
        assert_eq!(v.files, 6 + (1 + 1) + (2 + 1) + 2 * 3);
        let hex = sha256_hex(&layers[1]);
        let data = v
            .root
            .join("_data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data");
        assert_eq!(fs::read(data).expect("layer blob"), layers[1]);
    }
}
