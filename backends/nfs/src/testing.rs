//! A real NFS server for tests: NFS-Ganesha (Debian's `nfs-ganesha` + `nfs-ganesha-vfs`)
//! exporting a fresh directory over NFSv3/TCP on free loopback ports, with `No_Root_Squash`
//! and attribute caching off. `scripts/setup` installs it; the test starts `rpcbind` when it
//! is not running (ganesha refuses to start without it). Ganesha's VFS backend needs root.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::url::NfsUrl;

/// A running `ganesha.nfsd`, killed when dropped.
pub struct Ganesha {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub nfs_port: u16,
    pub mount_port: u16,
}

pub use stowage_backends::testing::free_port;

fn program(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path.display().to_string();
        }
    }
    name.to_string()
}

/// Starts rpcbind unless something answers on port 111. Called under the start lock, so
/// tests starting servers at once start one rpcbind.
fn ensure_rpcbind() {
    if TcpStream::connect(("127.0.0.1", 111)).is_ok() {
        return;
    }
    let status = Command::new(program("rpcbind"))
        .arg("-w")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start rpcbind: {e}. Run scripts/test (it installs rpcbind and nfs-ganesha)"
            )
        });
    assert!(status.success(), "rpcbind failed to start: {status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", 111)).is_err() {
        assert!(Instant::now() < deadline, "rpcbind did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Ganesha {
    /// Starts a server exporting an empty directory and waits until it serves. Panics with
    /// instructions when it cannot: NFS tests are never silently skipped.
    pub fn start() -> Ganesha {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the NFS tests run NFS-Ganesha, whose VFS backend needs root"
        );
        let dir = tempfile::Builder::new()
            .prefix("stowage-ganesha-")
            .tempdir()
            .expect("a temporary directory");
        fs::create_dir(dir.path().join("export")).expect("export directory");
        let mut server = Ganesha {
            child: None,
            dir,
            nfs_port: free_port(),
            mount_port: free_port(),
        };
        let config = format!(
            r#"NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {nfs};
    MNT_Port = {mnt};
    NLM_Port = {nlm};
    Rquota_Port = {rquota};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Bind_addr = 127.0.0.1;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {export};
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Attr_Expiration_Time = 0;
    FSAL {{ Name = VFS; }}
}}
"#,
            nfs = server.nfs_port,
            mnt = server.mount_port,
            nlm = free_port(),
            rquota = free_port(),
            export = server.export().display(),
        );
        fs::write(server.dir.path().join("ganesha.conf"), config).expect("ganesha.conf");
        server.launch();
        server
    }

    fn launch(&mut self) {
        // Servers starting at once race to register with rpcbind, and the loser exits
        // ("Cannot register NFS V3"): one start at a time, across test processes too. Each
        // re-registers the programs; tests reach their own server by its ports.
        let lock = fs::File::create(std::env::temp_dir().join("stowage-ganesha.lock"))
            .expect("the ganesha start lock");
        // SAFETY: flock on an open file descriptor; released when `lock` is closed.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock");
        ensure_rpcbind();
        let dir = self.dir.path();
        let log = dir.join("ganesha.log");
        let _ = fs::remove_file(&log);
        let child = Command::new(program("ganesha.nfsd"))
            .arg("-F")
            .arg("-f")
            .arg(dir.join("ganesha.conf"))
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .args(["-N", "NIV_EVENT"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start ganesha.nfsd: {e}. Run scripts/test (it installs nfs-ganesha, \
                     nfs-ganesha-vfs and rpcbind)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(&log) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains("NFS SERVER INITIALIZED")
                && TcpStream::connect(("127.0.0.1", self.nfs_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.mount_port)).is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ganesha.nfsd exited ({status}); its log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "ganesha.nfsd did not start; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same ports and export.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The exported directory, as seen on this machine.
    pub fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    /// The URL of `sub` (a relative path, or "") below the export.
    pub fn url(&self, sub: &str) -> NfsUrl {
        let path = match sub.is_empty() {
            true => self.export().display().to_string(),
            false => format!("{}/{sub}", self.export().display()),
        };
        NfsUrl {
            host: "127.0.0.1".into(),
            path,
            nfs_port: Some(self.nfs_port),
            mount_port: Some(self.mount_port),
            uid: None,
            gid: None,
            connections: None,
        }
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
    }
}
