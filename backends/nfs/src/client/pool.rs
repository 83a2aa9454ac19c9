//! The connection pool: leases of idle connections (or new ones), at most `connections` at once.

use std::io;

use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::rpc::opaque_auth;
use nfs3_client::Nfs3Client;

use super::tcp::{privileged_connect, TcpConnector};
use super::{Conn, NfsClient};

/// A connection taken from the pool. It goes back only through [`Lease::release`], after a
/// complete request: a request abandoned half-way (its future dropped) leaves the stream in
/// an unknown state, so the connection is then closed instead.
pub(super) struct Lease<'a> {
    client: &'a NfsClient,
    conn: Option<Conn>,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub(super) fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    pub(super) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.free.lock().expect("pool lock").push(conn);
        }
    }
}

impl NfsClient {
    pub(super) async fn lease(&self) -> io::Result<Lease<'_>> {
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

    /// Closes the idle connections (leased ones close when their lease is dropped).
    pub(super) fn close_idle(&self) {
        self.free.lock().expect("pool lock").clear();
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
}
