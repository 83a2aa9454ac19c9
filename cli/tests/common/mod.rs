//! What the end-to-end tests share: the real `stowage` binary on a temporary repository.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Stowage {
    pub dir: tempfile::TempDir,
    pub password: String,
    /// The repository location (default: `<dir>/repo`).
    pub repo: String,
    /// Extra environment, e.g. how to reach the S3 test server.
    pub env: Vec<(&'static str, String)>,
}

impl Stowage {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo").display().to_string();
        Stowage {
            dir,
            password: "test password".into(),
            repo,
            env: Vec::new(),
        }
    }

    /// `env` added to every command.
    pub fn with_env(self, env: Vec<(&'static str, String)>) -> Self {
        Stowage { env, ..self }
    }

    /// The repository at `repo`, and `env` added to every command.
    pub fn at(repo: &str, env: Vec<(&'static str, String)>) -> Self {
        Stowage {
            repo: repo.to_string(),
            ..Stowage::new().with_env(env)
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `stowage <args>` on this repository and cache, with the password in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stowage"));
        command
            .args(args)
            .env("STOWAGE_REPO", &self.repo)
            .env("STOWAGE_CACHE_DIR", self.path("cache"))
            .env("STOWAGE_PASSWORD", &self.password)
            .env_remove("STOWAGE_PASSWORD_FILE")
            .env_remove("STOWAGE_PASSWORD_COMMAND")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stowage")
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stowage {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Runs and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "stowage {args:?} should have failed");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }
}

/// `tar --sort=name -cf - <name> | sha256sum` with nanosecond mtimes, in `parent`.
pub fn gnu_tar_sha256(parent: &Path, name: &str) -> String {
    let out = Command::new("tar")
        .current_dir(parent)
        .args([
            "--sort=name",
            "--numeric-owner",
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "-cf",
            "-",
            name,
        ])
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out.stdout))
}

/// Waits until files just written are older than the racy window of change detection: a
/// file stamped within `RACY_MARGIN` before a backup started is read again by the next one,
/// and a timestamp of whole seconds (S3) stands for its whole second.
pub fn settle() {
    let racy = stowage_engine::RACY_MARGIN
        .to_std()
        .expect("a positive margin");
    std::thread::sleep(racy + std::time::Duration::from_millis(1150));
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to the process `pid` (a child of the test).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// The last component of a path, e.g. a volume's `dtr-registry-<replica>`.
pub fn dir_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 name")
        .to_string()
}

/// Insists that the trees are equal in bytes and metadata (GNU-tar-visible differences).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let differences = stowage_fixtures::compare::tree_differences(a, b).expect("compare");
    assert!(
        differences.is_empty(),
        "restore differs:\n{}",
        differences.join("\n")
    );
}

/// A number of a backup's `--json` summary.
pub fn summary_u64(backup: &Value, field: &str) -> u64 {
    backup["snapshot"]["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{field} in {backup}"))
}

/// Every file below `dir`.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
