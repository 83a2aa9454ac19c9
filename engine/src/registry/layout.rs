//! Knowledge of the registry v2 storage layout.

use std::path::Path;

/// The sha256 digest a registry blob's path names: `.../blobs/sha256/<xx>/<64 hex>/data`,
/// where `<xx>` is the first two hex digits. Other paths give `None`.
pub fn blob_digest(path: &Path) -> Option<[u8; 32]> {
    let parts: Vec<&[u8]> = path
        .iter()
        .map(std::os::unix::ffi::OsStrExt::as_bytes)
        .collect();
    let [.., blobs, algo, prefix, hex, data] = parts.as_slice() else {
        return None;
    };
    if *blobs != b"blobs" || *algo != b"sha256" || *data != b"data" || hex.len() != 64 {
        return None;
    }
    if !hex.starts_with(prefix) || prefix.len() != 2 {
        return None;
    }
    if !hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// The replica id in a DTR volume name: `dtr-registry-<id>` or `dtr-registry-nfs-<id>`.
pub fn replica_id(volume_name: &str) -> Option<String> {
    let rest = volume_name.strip_prefix("dtr-registry-")?;
    let id = rest.strip_prefix("nfs-").unwrap_or(rest);
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blob_paths_only() {
        let hex = "ab".to_string() + &"0".repeat(62);
        let good = format!("_data/docker/registry/v2/blobs/sha256/ab/{hex}/data");
        assert_eq!(blob_digest(Path::new(&good)).map(|d| d[0]), Some(0xab));
        let wrong_prefix = format!("blobs/sha256/cd/{hex}/data");
        assert!(blob_digest(Path::new(&wrong_prefix)).is_none());
        let link = format!("repositories/a/_layers/sha256/{hex}/link");
        assert!(blob_digest(Path::new(&link)).is_none());
        assert!(blob_digest(Path::new("data")).is_none());
    }

    #[test]
    fn replica_ids() {
        assert_eq!(replica_id("dtr-registry-a1b2").as_deref(), Some("a1b2"));
        assert_eq!(replica_id("dtr-registry-nfs-a1b2").as_deref(), Some("a1b2"));
        assert_eq!(replica_id("volume"), None);
    }
}
