//! The TCP transport under `nfs3_client`: Nagle off, and a reserved source port for root.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The largest reply taken: a READ of the largest transfer (1 MiB) or a READDIRPLUS page
/// (256 KiB) with their attributes fit many times over.
pub const MAX_REPLY: u32 = 4 << 20;

/// Refuses a reply whose record mark (the 4 bytes before it) announces more than
/// [`MAX_REPLY`] bytes: `nfs3_client` allocates what the mark says before reading it, so a
/// hostile or broken server could otherwise make every connection reserve 2 GiB.
pub fn check_record_mark(mark: [u8; 4]) -> io::Result<()> {
    let len = u32::from_be_bytes(mark) & 0x7fff_ffff;
    match len <= MAX_REPLY {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the NFS server announced a reply of {len} bytes (at most {MAX_REPLY} are taken)"
            ),
        )),
    }
}

/// A TCP connection as `nfs3_client` uses it. A read of zero bytes (the server closed the
/// connection, e.g. on restart) is an error here: the crate's `async_read_exact` would
/// otherwise spin on it forever. Each reply's record mark is read whole and checked
/// ([`check_record_mark`]) before any of it is handed on.
pub struct Tcp {
    stream: TcpStream,
    /// The record mark of the reply to the last call, while it is read and handed on.
    mark: [u8; 4],
    /// Bytes of `mark` read from the stream, and handed on.
    read: usize,
    handed: usize,
}

impl Tcp {
    fn new(stream: TcpStream) -> Self {
        Tcp {
            stream,
            mark: [0; 4],
            read: 4,
            handed: 4,
        }
    }

    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf).await? {
            0 if !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the NFS server closed the connection",
            )),
            n => Ok(n),
        }
    }
}

impl AsyncRead for Tcp {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.handed == 4 {
            return self.read_some(buf).await;
        }
        while self.read < 4 {
            let mut part = [0u8; 4];
            let n = self.read_some(&mut part[..4 - self.read]).await?;
            self.mark[self.read..self.read + n].copy_from_slice(&part[..n]);
            self.read += n;
            if self.read == 4 {
                check_record_mark(self.mark)?;
            }
        }
        let n = buf.len().min(4 - self.handed);
        buf[..n].copy_from_slice(&self.mark[self.handed..self.handed + n]);
        self.handed += n;
        Ok(n)
    }
}

impl AsyncWrite for Tcp {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A call: its reply comes next, record mark first.
        (self.read, self.handed) = (0, 0);
        match self.stream.write(buf).await? {
            0 if !buf.is_empty() => Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => Ok(n),
        }
    }
}

/// Makes [`Tcp`] connections, with Nagle's delay off (requests are single writes).
pub(super) struct TcpConnector;

impl Connector for TcpConnector {
    type Connection = Tcp;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Tcp> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Tcp::new(stream))
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> io::Result<Tcp> {
        let stream = bound_socket(addr, local_port)?.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Tcp::new(stream))
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

/// Connects from a reserved port (600–1023), as the kernel's NFS client does.
pub(super) async fn privileged_connect(addr: SocketAddr) -> io::Result<Tcp> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz target nfs_reply with its bounded allocator, FUZZING.md): a
    /// reply announcing 2 GiB made `nfs3_client` allocate 2 GiB before reading a byte of it.
    #[test]
    fn a_reply_announcing_more_than_max_reply_is_refused() {
        assert!(check_record_mark((0x8000_0000 | MAX_REPLY).to_be_bytes()).is_ok());
        assert!(check_record_mark(200u32.to_be_bytes()).is_ok());
        for len in [MAX_REPLY + 1, 0x7fff_ffff] {
            let e = check_record_mark((0x8000_0000 | len).to_be_bytes()).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[tokio::test]
    async fn the_record_mark_is_checked_before_it_is_handed_on() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut call = [0u8; 4];
            s.read_exact(&mut call).await.unwrap();
            // A good reply, in pieces, then a reply announcing 2 GiB.
            s.write_all(&[0x80, 0]).await.unwrap();
            s.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
            s.read_exact(&mut call).await.unwrap();
            s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        });
        let mut tcp = TcpConnector.connect(addr).await.unwrap();
        tcp.async_write_all(b"call").await.unwrap();
        let mut mark = [0u8; 4];
        tcp.async_read_exact(&mut mark).await.unwrap();
        assert_eq!(mark, [0x80, 0, 0, 4]);
        let mut body = [0u8; 4];
        tcp.async_read_exact(&mut body).await.unwrap();
        assert_eq!(body, [1, 2, 3, 4]);
        tcp.async_write_all(b"next").await.unwrap();
        let e = tcp.async_read_exact(&mut mark).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        server.await.unwrap();
    }
}
