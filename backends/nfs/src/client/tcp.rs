//! The TCP transport under `nfs3_client`: Nagle off, and a reserved source port for root.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
pub(super) struct TcpConnector;

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
