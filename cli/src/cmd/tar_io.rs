//! Tar streams in and out: files or stdin/stdout, outputs written under a temporary name and
//! renamed only when complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context as _;

/// `-` is stdin.
pub fn input(path: &str) -> anyhow::Result<(Box<dyn Read + Send>, String)> {
    if path == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
            "stdin".into(),
        ));
    }
    let file = File::open(path).with_context(|| format!("cannot read {path}"))?;
    let uri = std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string());
    Ok((Box::new(BufReader::with_capacity(1 << 20, file)), uri))
}

/// Where a tar goes: stdout, or a file that gets its name only once complete.
pub struct Output {
    temp: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// `None` or `-` is stdout.
    pub fn open(path: Option<&Path>) -> anyhow::Result<(Self, Box<dyn Write + Send>)> {
        match path {
            None => Ok((
                Output { temp: None },
                Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout())),
            )),
            Some(p) if p == Path::new("-") => Ok((
                Output { temp: None },
                Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout())),
            )),
            Some(p) => {
                let temp = p.with_file_name(format!(
                    ".{}.stowage-partial",
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                // Private from the start: metadata tars hold DTR's private keys.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temp)
                    .with_context(|| format!("cannot write {}", temp.display()))?;
                Ok((
                    Output {
                        temp: Some((temp, p.to_path_buf())),
                    },
                    Box::new(BufWriter::with_capacity(1 << 20, file)),
                ))
            }
        }
    }

    /// The stream was written completely: the file gets its name.
    pub fn commit(mut self) -> anyhow::Result<()> {
        if let Some((temp, dest)) = self.temp.take() {
            File::open(&temp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", temp.display()))?;
            std::fs::rename(&temp, &dest).with_context(|| format!("naming {}", dest.display()))?;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((temp, _)) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}
