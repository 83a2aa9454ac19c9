//! The data procedures: READ, WRITE and COMMIT, and their parallel forms over the pool.

use std::io;

use bytes::Bytes;
use nfs3_client::nfs3_types::nfs3::{self, nfs_fh3, stable_how, writeverf3};
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use super::errors::{ok, server_restarted};
use super::NfsClient;

impl NfsClient {
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
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.read(args)))
            .await?;
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
            let reply = self
                .call(what, &args, |c, args| Box::pin(c.write(args)))
                .await?;
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
        let reply = self
            .call(what, &args, |c, args| Box::pin(c.commit(args)))
            .await?;
        let committed = ok(reply).map_err(|e| self.error(what, e))?;
        if verifiers.into_iter().any(|v| v != committed.verf) {
            return Err(server_restarted(what));
        }
        Ok(())
    }
}
