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

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::nfs3::{
    self, createhow3, diropargs3, fattr3, ftype3, nfs_fh3, nfsstat3, sattr3, stable_how,
    writeverf3, Nfs3Option, Nfs3Result,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{ConnectError, MountError, Nfs3Client, Nfs3ConnectionBuilder, RpcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::url::NfsUrl;

type Conn = Nfs3Client<Tcp>;

/// A TCP connection as `nfs3_client` uses it. A read of zero bytes (the server closed the
/// connection, e.g. on restart) is an error here: the crate's `async_read_exact` would
/// otherwise spin on it forever.
pub struct Tcp(TcpStream);

impl AsyncRead for Tcp {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf).await? {
            0 if !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the NFS server closed the connection",
            )),
            n => Ok(n),
        }
    }
}

impl AsyncWrite for Tcp {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf).await? {
            0 if !buf.is_empty() => Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => Ok(n),
        }
    }
}

/// Makes [`Tcp`] connections, with Nagle's delay off (requests are single writes).
struct TcpConnector;

impl Connector for TcpConnector {
    type Connection = Tcp;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Tcp> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Tcp(stream))
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> io::Result<Tcp> {
        let stream = bound_socket(addr, local_port)?.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Tcp(stream))
    }
}

fn bound_socket(addr: SocketAddr, local_port: u16) -> io::Result<TcpSocket> {
    let (socket, any) = match addr {
        SocketAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        SocketAddr::V6(_) => (
            TcpSocket::new_v6()?,
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        ),
    };
    socket.bind(SocketAddr::new(any, local_port))?;
    Ok(socket)
}

/// How often a request is sent before its error is reported.
pub const ATTEMPTS: u32 = 6;
/// Connections kept open unless the URL says otherwise.
const DEFAULT_CONNECTIONS: usize = 8;
/// How long a request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest read or write sent in one request, whatever the server allows.
const MAX_TRANSFER: u32 = 1 << 20;

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

/// A connection taken from the pool. It goes back only through [`Lease::release`], after a
/// complete request: a request abandoned half-way (its future dropped) leaves the stream in
/// an unknown state, so the connection is then closed instead.
struct Lease<'a> {
    client: &'a NfsClient,
    conn: Option<Conn>,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.free.lock().expect("pool lock").push(conn);
        }
    }
}

/// Sends one request with retries: `$call` is an expression using the connection `$conn`.
/// Yields the reply (`Nfs3Result`), or returns the transport error from the function.
/// Every retry is logged (`warn`): what, the procedure, the attempt and the error.
macro_rules! call {
    ($client:expr, $what:expr, $conn:ident => $recv:ident . $proc:ident ( $($arg:expr),* )) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let retrying = |attempt: u32, error: &dyn std::fmt::Display| {
                tracing::warn!(
                    what = %$what,
                    procedure = stringify!($proc),
                    attempt,
                    of = ATTEMPTS,
                    %error,
                    "NFS request failed; retrying"
                );
            };
            let mut lease = match $client.lease().await {
                Ok(lease) => lease,
                // Cannot connect (yet): the server may be restarting.
                Err(e) if attempt < ATTEMPTS => {
                    retrying(attempt, &e);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err($client.error($what, e)),
            };
            let $conn = lease.conn();
            // A server that stops answering (a partition, a paused machine) must not hang the
            // request: past the timeout the connection counts as broken.
            let call = $recv.$proc($($arg),*);
            let reply = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                Ok(reply) => reply,
                Err(_) => Err(RpcError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from the NFS server within {REQUEST_TIMEOUT:?}"),
                ))),
            };
            match reply {
                Ok(Nfs3Result::Err((nfsstat3::NFS3ERR_JUKEBOX, _))) if attempt < ATTEMPTS => {
                    retrying(attempt, &"the server is busy (NFS3ERR_JUKEBOX)");
                    lease.release();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(reply) => {
                    lease.release();
                    break reply;
                }
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    retrying(attempt, &e);
                    // The other idle connections most likely broke too (a server restart):
                    // the next attempt opens a fresh one.
                    drop(lease);
                    $client.free.lock().expect("pool lock").clear();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    if e.is_connection_reusable() {
                        lease.release();
                    }
                    return Err($client.error($what, rpc_io(e)));
                }
            }
        }
    }};
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(5))
}

fn retryable(e: &RpcError) -> bool {
    !e.is_connection_reusable()
}

fn rpc_io(e: RpcError) -> io::Error {
    match e {
        RpcError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The errno for an NFS status (the protocol's numbers are BSD's, not Linux's).
pub fn status_error(status: nfsstat3) -> io::Error {
    use nfsstat3::*;
    let errno = match status {
        NFS3ERR_PERM => libc::EPERM,
        NFS3ERR_NOENT => libc::ENOENT,
        NFS3ERR_IO => libc::EIO,
        NFS3ERR_NXIO => libc::ENXIO,
        NFS3ERR_ACCES => libc::EACCES,
        NFS3ERR_EXIST => libc::EEXIST,
        NFS3ERR_XDEV => libc::EXDEV,
        NFS3ERR_NODEV => libc::ENODEV,
        NFS3ERR_NOTDIR => libc::ENOTDIR,
        NFS3ERR_ISDIR => libc::EISDIR,
        NFS3ERR_INVAL => libc::EINVAL,
        NFS3ERR_FBIG => libc::EFBIG,
        NFS3ERR_NOSPC => libc::ENOSPC,
        NFS3ERR_ROFS => libc::EROFS,
        NFS3ERR_MLINK => libc::EMLINK,
        NFS3ERR_NAMETOOLONG => libc::ENAMETOOLONG,
        NFS3ERR_NOTEMPTY => libc::ENOTEMPTY,
        NFS3ERR_DQUOT => libc::EDQUOT,
        NFS3ERR_STALE => libc::ESTALE,
        NFS3ERR_REMOTE => libc::EREMOTE,
        NFS3ERR_NOTSUPP => libc::EOPNOTSUPP,
        other => return io::Error::other(format!("{other}")),
    };
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("{e} ({status})"))
}

/// A reply's result, with an NFS error status as an `io::Error`.
fn ok<T, E>(reply: Nfs3Result<T, E>) -> io::Result<T> {
    match reply {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((status, _)) => Err(status_error(status)),
    }
}

fn name(name: &[u8]) -> nfs3::filename3<'_> {
    nfs3::filename3(Opaque::borrowed(name))
}

fn dirop<'a>(dir: &nfs_fh3, file: &'a [u8]) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: name(file),
    }
}

/// One entry of a directory listing: name, attributes and handle.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: fattr3,
    pub fh: nfs_fh3,
}

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

    /// An error about `what` (a path or URL), with this server in the message.
    pub fn error(&self, what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }

    async fn lease(&self) -> io::Result<Lease<'_>> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| io::Error::other("connection pool closed"))?;
        let pooled = self.free.lock().expect("pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open_connection().await?,
        };
        Ok(Lease {
            client: self,
            conn: Some(conn),
            _slot: slot,
        })
    }

    async fn open_connection(&self) -> io::Result<Conn> {
        let stream = match self.privileged {
            true => privileged_connect(self.addr).await?,
            false => TcpConnector.connect(self.addr).await?,
        };
        Ok(Nfs3Client::new_with_auth(
            stream,
            self.credential.clone(),
            opaque_auth::default(),
        ))
    }

    pub async fn getattr(&self, what: &str, fh: &nfs_fh3) -> io::Result<fattr3> {
        let args = nfs3::GETATTR3args { object: fh.clone() };
        let reply = call!(self, what, c => c.getattr(&args));
        ok(reply)
            .map(|r| r.obj_attributes)
            .map_err(|e| self.error(what, e))
    }

    /// The handle and attributes of `file` in `dir`.
    pub async fn lookup(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
    ) -> io::Result<(nfs_fh3, fattr3)> {
        let args = nfs3::LOOKUP3args {
            what: dirop(dir, file),
        };
        let reply = call!(self, what, c => c.lookup(&args));
        let found = ok(reply).map_err(|e| self.error(what, e))?;
        let attr = match found.obj_attributes {
            Nfs3Option::Some(attr) => attr,
            Nfs3Option::None => self.getattr(what, &found.object).await?,
        };
        Ok((found.object, attr))
    }

    /// Every entry of the directory but `.` and `..`, with attributes and handles.
    pub async fn read_dir(&self, what: &str, dir: &nfs_fh3) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        let mut restarted = false;
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf,
                dircount: 64 << 10,
                maxcount: 256 << 10,
            };
            let reply = call!(self, what, c => c.readdirplus(&args));
            let page = match reply {
                // The directory changed under a long listing: start it again, once.
                Nfs3Result::Err((nfsstat3::NFS3ERR_BAD_COOKIE, _)) if !restarted => {
                    tracing::warn!(
                        what,
                        "the directory changed during the listing (NFS3ERR_BAD_COOKIE); \
                         listing it again"
                    );
                    restarted = true;
                    out.clear();
                    cookie = 0;
                    cookieverf = nfs3::cookieverf3::default();
                    continue;
                }
                reply => ok(reply).map_err(|e| self.error(what, e))?,
            };
            if page.reply.entries.0.is_empty() && !page.reply.eof {
                return Err(self.error(
                    what,
                    io::Error::other("the server returned an empty directory page before the end"),
                ));
            }
            cookieverf = page.cookieverf;
            for entry in page.reply.entries.0 {
                cookie = entry.cookie;
                let entry_name = entry.name.0.into_owned();
                if entry_name == b"." || entry_name == b".." {
                    continue;
                }
                let (fh, attr) = match (entry.name_handle, entry.name_attributes) {
                    (Nfs3Option::Some(fh), Nfs3Option::Some(attr)) => (fh, attr),
                    // The server may leave either out; ask for the entry on its own.
                    _ => match self.lookup(what, dir, &entry_name).await {
                        Ok(found) => found,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    },
                };
                out.push(DirEntry {
                    name: entry_name,
                    attr,
                    fh,
                });
            }
            if page.reply.eof {
                return Ok(out);
            }
        }
    }

    pub async fn readlink(&self, what: &str, fh: &nfs_fh3) -> io::Result<Vec<u8>> {
        let args = nfs3::READLINK3args {
            symlink: fh.clone(),
        };
        let reply = call!(self, what, c => c.readlink(&args));
        ok(reply)
            .map(|r| r.data.0.into_owned())
            .map_err(|e| self.error(what, e))
    }

    /// Up to `count` bytes at `offset`, and whether the file ends there.
    pub async fn read(
        &self,
        what: &str,
        fh: &nfs_fh3,
        offset: u64,
        count: u32,
    ) -> io::Result<(Bytes, bool)> {
        let args = nfs3::READ3args {
            file: fh.clone(),
            offset,
            count,
        };
        let reply = call!(self, what, c => c.read(&args));
        let data = ok(reply).map_err(|e| self.error(what, e))?;
        Ok((Bytes::from(data.data.into_owned()), data.eof))
    }

    /// The bytes of `range` (clipped to the file's end), read in parallel requests.
    pub async fn read_range(
        &self,
        what: &str,
        fh: &nfs_fh3,
        start: u64,
        end: u64,
    ) -> io::Result<Bytes> {
        use futures::{StreamExt, TryStreamExt};
        let step = u64::from(self.rsize);
        let parts: Vec<(Bytes, bool)> = futures::stream::iter((start..end).step_by(step as usize))
            .map(|offset| {
                let count = (end - offset).min(step) as u32;
                self.read(what, fh, offset, count)
            })
            .buffered(self.connections)
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity((end - start) as usize);
        for (data, eof) in parts {
            let expected = (end - start - out.len() as u64).min(step) as usize;
            out.extend_from_slice(&data);
            // A short part without EOF: the parts after it would land at the wrong offsets.
            if eof || data.len() < expected {
                break;
            }
        }
        // What the parallel reads did not cover (a short read, or the file changed size):
        // read on from exactly where the bytes end.
        let mut offset = start + out.len() as u64;
        while offset < end {
            let (data, eof) = self
                .read(what, fh, offset, (end - offset).min(step) as u32)
                .await?;
            out.extend_from_slice(&data);
            offset += data.len() as u64;
            if eof || data.is_empty() {
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    /// Writes `data` at `offset` (UNSTABLE: call [`NfsClient::commit`] afterwards); returns
    /// the server's write verifier, or `None` when the server already made it stable.
    pub async fn write(
        &self,
        what: &str,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
    ) -> io::Result<Option<writeverf3>> {
        let mut done = 0;
        let mut verifier = None;
        while done < data.len() {
            let args = nfs3::WRITE3args {
                file: fh.clone(),
                offset: offset + done as u64,
                count: (data.len() - done) as u32,
                stable: stable_how::UNSTABLE,
                data: Opaque::borrowed(&data[done..]),
            };
            let reply = call!(self, what, c => c.write(&args));
            let written = ok(reply).map_err(|e| self.error(what, e))?;
            if written.count == 0 {
                return Err(self.error(what, io::Error::other("the server wrote nothing")));
            }
            done += written.count as usize;
            if written.committed == stable_how::UNSTABLE {
                match verifier {
                    Some(v) if v != written.verf => return Err(server_restarted(what)),
                    _ => verifier = Some(written.verf),
                }
            }
        }
        Ok(verifier)
    }

    /// Writes `data` at `offset` in parallel requests of `wsize` bytes; returns the write
    /// verifiers to check at COMMIT.
    pub async fn write_parallel(
        &self,
        what: &str,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
    ) -> io::Result<Vec<writeverf3>> {
        use futures::{StreamExt, TryStreamExt};
        let step = self.wsize as usize;
        let mut at = offset;
        let mut writes = Vec::new();
        for part in data.chunks(step) {
            writes.push(self.write(what, fh, at, part));
            at += part.len() as u64;
        }
        let verifiers: Vec<Option<writeverf3>> = futures::stream::iter(writes)
            .buffer_unordered(self.connections)
            .try_collect()
            .await?;
        Ok(verifiers.into_iter().flatten().collect())
    }

    /// Makes the file's unstable writes stable; `verifiers` are those the writes returned.
    pub async fn commit(
        &self,
        what: &str,
        fh: &nfs_fh3,
        verifiers: impl IntoIterator<Item = writeverf3>,
    ) -> io::Result<()> {
        let args = nfs3::COMMIT3args {
            file: fh.clone(),
            offset: 0,
            count: 0,
        };
        let reply = call!(self, what, c => c.commit(&args));
        let committed = ok(reply).map_err(|e| self.error(what, e))?;
        if verifiers.into_iter().any(|v| v != committed.verf) {
            return Err(server_restarted(what));
        }
        Ok(())
    }

    /// Creates (or truncates) `file` in `dir` with `mode`. Safe to repeat.
    pub async fn create(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        mode: u32,
    ) -> io::Result<nfs_fh3> {
        let args = nfs3::CREATE3args {
            where_: dirop(dir, file),
            how: createhow3::UNCHECKED(sattr3 {
                mode: Nfs3Option::Some(mode),
                size: Nfs3Option::Some(0),
                ..sattr3::default()
            }),
        };
        let reply = call!(self, what, c => c.create(&args));
        let created = ok(reply).map_err(|e| self.error(what, e))?;
        self.handle_of(what, dir, file, created.obj).await
    }

    /// The handle a CREATE or MKDIR returned, or (servers may leave it out) looked up.
    async fn handle_of(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        returned: Nfs3Option<nfs_fh3>,
    ) -> io::Result<nfs_fh3> {
        match returned {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => Ok(self.lookup(what, dir, file).await?.0),
        }
    }

    /// Creates directory `file` in `dir`, or finds it if it exists (a repeated request, or
    /// another writer first).
    pub async fn mkdir(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        mode: u32,
    ) -> io::Result<nfs_fh3> {
        let args = nfs3::MKDIR3args {
            where_: dirop(dir, file),
            attributes: sattr3 {
                mode: Nfs3Option::Some(mode),
                ..sattr3::default()
            },
        };
        let reply = call!(self, what, c => c.mkdir(&args));
        match ok(reply) {
            Ok(made) => self.handle_of(what, dir, file, made.obj).await,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let (fh, attr) = self.lookup(what, dir, file).await?;
                match attr.type_ {
                    ftype3::NF3DIR => Ok(fh),
                    _ => Err(self.error(what, io::Error::from(io::ErrorKind::NotADirectory))),
                }
            }
            Err(e) => Err(self.error(what, e)),
        }
    }

    pub async fn symlink(
        &self,
        what: &str,
        dir: &nfs_fh3,
        file: &[u8],
        target: &[u8],
    ) -> io::Result<()> {
        let args = nfs3::SYMLINK3args {
            where_: dirop(dir, file),
            symlink: nfs3::symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfs3::nfspath3(Opaque::borrowed(target)),
            },
        };
        let reply = call!(self, what, c => c.symlink(&args));
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Removes `file` from `dir`; `NotFound` when it is not there (also when a repeated
    /// request finds the first one's work done).
    pub async fn remove(&self, what: &str, dir: &nfs_fh3, file: &[u8]) -> io::Result<()> {
        let args = nfs3::REMOVE3args {
            object: dirop(dir, file),
        };
        let reply = call!(self, what, c => c.remove(&args));
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir`, replacing `to` atomically.
    pub async fn rename(
        &self,
        what: &str,
        (from_dir, from): (&nfs_fh3, &[u8]),
        (to_dir, to): (&nfs_fh3, &[u8]),
    ) -> io::Result<()> {
        let args = nfs3::RENAME3args {
            from: dirop(from_dir, from),
            to: dirop(to_dir, to),
        };
        let reply = call!(self, what, c => c.rename(&args));
        match ok(reply) {
            Ok(_) => Ok(()),
            // A repeated request whose first one was done: `from` is gone and `to` is there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match self.lookup(what, to_dir, to).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(self.error(what, e)),
                }
            }
            Err(e) => Err(self.error(what, e)),
        }
    }

    pub async fn setattr(&self, what: &str, fh: &nfs_fh3, attr: sattr3) -> io::Result<()> {
        let args = nfs3::SETATTR3args {
            object: fh.clone(),
            new_attributes: attr,
            guard: Nfs3Option::None,
        };
        let reply = call!(self, what, c => c.setattr(&args));
        ok(reply).map(drop).map_err(|e| self.error(what, e))
    }

    /// Walks `segments` from the root (each must be a directory); with `create`, makes the
    /// missing ones (0700).
    pub async fn walk(&self, what: &str, segments: &[&[u8]], create: bool) -> io::Result<nfs_fh3> {
        let mut fh = self.root.clone();
        for segment in segments {
            fh = match self.lookup(what, &fh, segment).await {
                Ok((found, attr)) if attr.type_ == ftype3::NF3DIR => found,
                Ok(_) => {
                    return Err(self.error(what, io::Error::from(io::ErrorKind::NotADirectory)))
                }
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    self.mkdir(what, &fh, segment, 0o700).await?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(fh)
    }
}

/// The server restarted between unstable writes and their COMMIT (its write verifier
/// changed): the writes may be lost and must be repeated.
#[derive(Debug)]
pub struct ServerRestarted(String);

impl std::fmt::Display for ServerRestarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the NFS server restarted while the data was written (its write verifier changed); the unstable writes may be lost",
            self.0
        )
    }
}

impl std::error::Error for ServerRestarted {}

fn server_restarted(what: &str) -> io::Error {
    io::Error::other(ServerRestarted(what.to_string()))
}

/// Whether `e` is a [`ServerRestarted`].
pub fn is_server_restarted(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ServerRestarted>())
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

/// Connects from a reserved port (600–1023), as the kernel's NFS client does.
async fn privileged_connect(addr: SocketAddr) -> io::Result<Tcp> {
    let first = rand::random::<u16>() % 424;
    let mut last = None;
    for i in 0..424 {
        match TcpConnector
            .connect_with_port(addr, 600 + (first + i) % 424)
            .await
        {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no reserved port free")))
}
