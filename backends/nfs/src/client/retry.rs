//! [`NfsClient::call`]: one request sent with retries across broken connections and JUKEBOX.

use std::io;
use std::time::Duration;

use futures::future::BoxFuture;
use nfs3_client::nfs3_types::nfs3::{nfsstat3, Nfs3Result};
use nfs3_client::RpcError;

use super::{Conn, NfsClient};

/// How often a request is sent before its error is reported.
pub const ATTEMPTS: u32 = 6;
/// How long a request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl NfsClient {
    /// Sends one request with retries: `send` sends `args` on the connection it is given,
    /// once per attempt. Returns the reply (`Nfs3Result`), or the transport error as an
    /// error about `what`.
    ///
    /// `args` is passed to `send` rather than captured by it, so that the future it returns
    /// borrows only its two parameters. Every retry is logged (`warn`): what, the attempt and
    /// the error.
    pub(super) async fn call<A, T, E>(
        &self,
        what: &str,
        args: &A,
        mut send: impl for<'c> FnMut(
            &'c mut Conn,
            &'c A,
        ) -> BoxFuture<'c, Result<Nfs3Result<T, E>, RpcError>>,
    ) -> io::Result<Nfs3Result<T, E>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut lease = match self.lease().await {
                Ok(lease) => lease,
                // Cannot connect (yet): the server may be restarting.
                Err(e) if attempt < ATTEMPTS => {
                    retrying(what, attempt, &e);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(self.error(what, e)),
            };
            // A server that stops answering (a partition, a paused machine) must not hang the
            // request: past the timeout the connection counts as broken.
            let request = send(lease.conn(), args);
            let reply = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                Ok(reply) => reply,
                Err(_) => Err(RpcError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from the NFS server within {REQUEST_TIMEOUT:?}"),
                ))),
            };
            match reply {
                Ok(Nfs3Result::Err((nfsstat3::NFS3ERR_JUKEBOX, _))) if attempt < ATTEMPTS => {
                    retrying(what, attempt, &"the server is busy (NFS3ERR_JUKEBOX)");
                    lease.release();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(reply) => {
                    lease.release();
                    return Ok(reply);
                }
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    retrying(what, attempt, &e);
                    // The other idle connections most likely broke too (a server restart):
                    // the next attempt opens a fresh one.
                    drop(lease);
                    self.close_idle();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    if e.is_connection_reusable() {
                        lease.release();
                    }
                    return Err(self.error(what, rpc_io(e)));
                }
            }
        }
    }
}

fn retrying(what: &str, attempt: u32, error: &dyn std::fmt::Display) {
    tracing::warn!(what, attempt, of = ATTEMPTS, %error, "NFS request failed; retrying");
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
