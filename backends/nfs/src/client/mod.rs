//! An NFSv3 client for an `nfs://` location: the export mounted once (MOUNT protocol, no
//! kernel involved), then a pool of TCP connections to the NFS service, each carrying one
//! request at a time, so that reads and writes of one object and lookups of many proceed in
//! parallel.
//!
//! Every procedure returns `io::Result` with the NFS status mapped to the matching errno, so
//! callers test `ErrorKind::NotFound` as for local files. A broken connection (the server
//! restarted, the network dropped) is closed and the request sent again on a new one, up to
//! [`ATTEMPTS`] times over about ten seconds; so are `NFS3ERR_JUKEBOX` replies. Requests
//! whose first reply may have been lost are written to be safe to repeat (see the callers).
//!
//! This folder holds [`NfsClient`] and everything it is made of: `mount` (connecting and
//! mounting), `tcp` (the transport), `pool` (leased connections), `retry` (every request
//! goes through `NfsClient::call`), `namespace` and `data` (the NFS procedures, which build
//! their arguments and decode the replies) and `errors` (statuses as errnos). It may use
//! `nfs3_client` for the protocol; tokio for sockets, timers and the pool's semaphore; libc,
//! `gethostname` and `rand` for the credential and reserved ports; `bytes` and `futures` for
//! data and parallel or boxed requests; and of this crate only [`crate::url::NfsUrl`]. The
//! store, source, target and writer use it, never the other way round.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use nfs3_client::nfs3_types::nfs3::nfs_fh3;
use nfs3_client::nfs3_types::rpc::opaque_auth;
use nfs3_client::Nfs3Client;
use tokio::sync::Semaphore;

use crate::url::NfsUrl;

mod data;
mod errors;
mod mount;
mod namespace;
mod pool;
mod retry;
mod tcp;

pub use errors::{is_server_restarted, status_error, ServerRestarted};
pub use namespace::DirEntry;
pub use retry::ATTEMPTS;
pub use tcp::{check_record_mark, Tcp, MAX_REPLY};

type Conn = Nfs3Client<Tcp>;

/// A mounted export: its root handle and a pool of connections to its NFS service.
pub struct NfsClient {
    pub url: NfsUrl,
    addr: SocketAddr,
    privileged: bool,
    credential: opaque_auth<'static>,
    /// The handle of the URL's path.
    pub root: nfs_fh3,
    /// Bytes per READ and WRITE request.
    pub rsize: u32,
    pub wsize: u32,
    /// Whether requests are made as root (so owners can be restored).
    pub as_root: bool,
    free: Mutex<Vec<Conn>>,
    slots: Semaphore,
    pub connections: usize,
}

impl std::fmt::Debug for NfsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsClient").field("url", &self.url).finish()
    }
}

impl NfsClient {
    /// An error about `what` (a path or URL), with this server in the message.
    pub fn error(&self, what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}
