//! Helpers for tests that start real servers.

use std::path::{Path, PathBuf};

use crate::store::TEMP_MARK;

/// Every temporary file a store left under `dir` (a store's files are never temporary once
/// its operations returned).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(temp_files(&path));
        } else if path.to_string_lossy().contains(TEMP_MARK) {
            out.push(path);
        }
    }
    out
}

/// A free TCP port on 127.0.0.1, for a test server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
