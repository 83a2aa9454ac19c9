//! Tar streams in and out: files or stdin/stdout, outputs written under a temporary name and
//! renamed only when complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context as _;
use stowage_engine::Id;
use stowage_engine::Snapshot;
use stowage_engine::{backup_tar, TarOptions};

use crate::open::{hostname, Context};

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

/// The stdout of `command` (program and arguments), read as it runs: at its end the command's
/// exit status is read, and a failed run is a read error, so no snapshot is written of
/// what a failed `docker/dtr backup` printed.
pub fn command_input(command: &[String]) -> anyhow::Result<(Box<dyn Read + Send>, String)> {
    let (program, arguments) = command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("--stdin-from-command needs a command after --"))?;
    let mut child = std::process::Command::new(program)
        .args(arguments)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let shown = command.join(" ");
    let reader = CommandOutput {
        stdout: BufReader::with_capacity(1 << 20, stdout),
        child,
        command: shown.clone(),
    };
    Ok((Box::new(reader), format!("command: {shown}")))
}

struct CommandOutput {
    stdout: BufReader<std::process::ChildStdout>,
    child: std::process::Child,
    command: String,
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "`{}` failed ({status}): what it printed is not kept",
                    self.command
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    /// A backup that failed before the command's end does not leave it running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where a tar goes: stdout, or a file that gets its name only once complete.
pub struct Output {
    temp: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// `None` or `-` is stdout.
    /// A tar is never written to a terminal: it would be noise on the screen, and the
    /// command most likely lacks its `>`.
    pub fn open(path: Option<&Path>) -> anyhow::Result<(Self, Box<dyn Write + Send>)> {
        let to_stdout = path.is_none_or(|p| p == Path::new("-"));
        if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!(
                "refusing to write a tar to a terminal: redirect it (> file.tar, | docker/dtr \
                 restore ...) or pass -o FILE"
            );
        }
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

/// What `backup-metadata` and `import-tar` share: the snapshot's labels and the output form.
#[derive(clap::Args)]
pub struct TarBackupArgs {
    /// The DTR replica the backup was taken from (import-tar: default taken from a
    /// dtr-registry-<replica> top directory).
    #[arg(long)]
    replica_id: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl TarBackupArgs {
    /// Backs up the tar `reader` gives (read from `uri`). Prints the JSON summary when asked for and
    /// returns `None`; else returns the snapshot for the caller's summary.
    pub async fn backup(
        self,
        ctx: &Context,
        (reader, uri): (Box<dyn Read + Send>, String),
        kind: &str,
        fallback_name: &str,
        dtr_metadata: bool,
    ) -> anyhow::Result<Option<(Id, Snapshot)>> {
        let repo = ctx.open().await?;
        let opts = TarOptions {
            host: self.host.unwrap_or_else(hostname),
            tags: self.tags,
            replica_id: self.replica_id,
            kind: kind.into(),
            uri,
            fallback_name: fallback_name.into(),
            dtr_metadata,
            pack_size: 16 << 20,
        };
        let bars = ctx.bars();
        let (id, snapshot) = backup_tar(repo, reader, opts, bars.clone()).await?;
        bars.finish();
        if self.json {
            super::print_json(&serde_json::json!({ "id": id, "snapshot": snapshot }))?;
            return Ok(None);
        }
        Ok(Some((id, snapshot)))
    }
}
