//! [`NfsClient::connect`]: the export mounted over MOUNT, its transfer sizes read, the pool set up.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use nfs3_client::nfs3_types::nfs3;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{ConnectError, MountError, Nfs3ConnectionBuilder};
use tokio::sync::Semaphore;

use super::errors::ok;
use super::namespace::dirop;
use super::tcp::TcpConnector;
use super::NfsClient;
use crate::url::NfsUrl;

/// Connections kept open unless the URL says otherwise.
const DEFAULT_CONNECTIONS: usize = 8;
/// The largest read or write sent in one request, whatever the server allows.
const MAX_TRANSFER: u32 = 1 << 20;

impl NfsClient {
    /// Mounts the URL's export (or, when the server only exports a parent of the URL's path,
    /// that parent, and looks the rest up) and reads the server's transfer sizes.
    pub async fn connect(url: &NfsUrl) -> io::Result<NfsClient> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{url}: {what}: {e}"));
        let ip = resolve(&url.host)
            .await
            .map_err(|e| fail("cannot resolve the host", &e))?;
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let uid = url.uid.unwrap_or(euid);
        let gid = url.gid.unwrap_or(egid);
        let machine = gethostname::gethostname().to_string_lossy().into_owned();
        let credential = opaque_auth::auth_unix(&auth_unix {
            stamp: rand::random(),
            machinename: Opaque::owned(machine.into_bytes()),
            uid,
            gid,
            gids: vec![gid],
        });
        // Servers that insist on a reserved source port (Linux's default `secure` export)
        // accept root's connections; others do not care.
        let privileged = euid == 0;
        let segments = url.segments();
        let mut mounted = None;
        let mut last_error = None;
        // The longest exported prefix of the path: try it whole first.
        for take in (0..=segments.len()).rev() {
            let export = format!("/{}", segments[..take].join("/"));
            let mut builder = Nfs3ConnectionBuilder::new(TcpConnector, ip.to_string(), &export)
                .connect_from_privileged_port(privileged)
                .credential(credential.clone());
            if let Some(port) = url.mount_port {
                builder = builder.mount_port(port);
            }
            if let Some(port) = url.nfs_port {
                builder = builder.nfs3_port(port);
            }
            match builder.mount().await {
                Ok(conn) => {
                    mounted = Some((conn, take));
                    break;
                }
                Err(ConnectError::Mount(MountError::Denied(status))) => {
                    last_error = Some(format!("the server refuses to mount {export}: {status}"));
                }
                Err(e) => return Err(fail("cannot reach the NFS server", &e)),
            }
        }
        let Some((conn, exported)) = mounted else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{url}: {}",
                    last_error.unwrap_or_else(|| "not exported".into())
                ),
            ));
        };
        let nfs_port = conn.nfs3_port;
        let mut root = conn.root_nfs_fh3();
        let mut first = conn.into_nfs3_client();
        for segment in &segments[exported..] {
            let reply = first
                .lookup(&nfs3::LOOKUP3args {
                    what: dirop(&root, segment.as_bytes()),
                })
                .await
                .map_err(|e| fail("lookup", &e))?;
            root = ok(reply)
                .map_err(|e| io::Error::new(e.kind(), format!("{url}: {segment}: {e}")))?
                .object;
        }
        let info = ok(first
            .fsinfo(&nfs3::FSINFO3args {
                fsroot: root.clone(),
            })
            .await
            .map_err(|e| fail("FSINFO", &e))?)
        .map_err(|e| fail("FSINFO", &e))?;
        let size = |pref: u32, max: u32| match (pref, max) {
            (0, 0) => 64 << 10,
            (0, max) => max.min(MAX_TRANSFER),
            (pref, _) => pref.min(MAX_TRANSFER),
        };
        let connections = url.connections.unwrap_or(DEFAULT_CONNECTIONS);
        Ok(NfsClient {
            url: url.clone(),
            addr: SocketAddr::new(ip, nfs_port),
            privileged,
            credential,
            root,
            rsize: size(info.rtpref, info.rtmax),
            wsize: size(info.wtpref, info.wtmax),
            as_root: uid == 0,
            free: Mutex::new(vec![first]),
            slots: Semaphore::new(connections),
            connections,
        })
    }
}

async fn resolve(host: &str) -> io::Result<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, 111))
        .await?
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no IPv4 address"))
}
