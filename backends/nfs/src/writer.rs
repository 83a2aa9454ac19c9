//! A file written on the server under a temporary name: WRITEs of `wsize` bytes, up to
//! [`WRITE_AHEAD`] in flight, then COMMIT (checking that the server did not restart in
//! between) and RENAME into place. Restored files and streamed repository uploads (packs)
//! are written so. Dropped before it is complete, the temporary file is removed.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use nfs3_client::nfs3_types::nfs3::{nfs_fh3, writeverf3};
use stowage_backends::block_on;
use stowage_backends::store::TEMP_MARK;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::client::NfsClient;

/// WRITEs kept in flight per file.
const WRITE_AHEAD: usize = 2;

pub(crate) struct TempFile {
    client: Arc<NfsClient>,
    handle: Handle,
    /// The file's location, for messages.
    what: String,
    dir: nfs_fh3,
    temp: Vec<u8>,
    fh: nfs_fh3,
    buffer: Vec<u8>,
    offset: u64,
    in_flight: VecDeque<JoinHandle<io::Result<Option<writeverf3>>>>,
    verifiers: Vec<writeverf3>,
    done: bool,
}

impl TempFile {
    /// Creates a temporary file (0600) in `dir`.
    pub async fn create(
        client: &Arc<NfsClient>,
        handle: Handle,
        what: String,
        dir: nfs_fh3,
    ) -> io::Result<TempFile> {
        let temp = format!("{TEMP_MARK}{:016x}", rand::random::<u64>()).into_bytes();
        let fh = client.create(&what, &dir, &temp, 0o600).await?;
        Ok(TempFile {
            client: Arc::clone(client),
            handle,
            what,
            dir,
            temp,
            fh,
            buffer: Vec::new(),
            offset: 0,
            in_flight: VecDeque::new(),
            verifiers: Vec::new(),
            done: false,
        })
    }

    /// Appends bytes; blocks while [`WRITE_AHEAD`] WRITEs are in flight.
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        let wsize = self.client.wsize as usize;
        while !data.is_empty() {
            let n = data.len().min(wsize - self.buffer.len());
            self.buffer.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buffer.len() == wsize {
                self.spawn_write();
                while self.in_flight.len() > WRITE_AHEAD {
                    let task = self.in_flight.pop_front().expect("in flight");
                    let verifier = block_on(&self.handle, task);
                    self.record(verifier)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `data`, all of it at once (WRITEs on every connection), into a file nothing
    /// was appended to.
    pub async fn write_whole(&mut self, data: &[u8]) -> io::Result<()> {
        debug_assert!(self.buffer.is_empty() && self.offset == 0);
        let verifiers = self
            .client
            .write_parallel(&self.what, &self.fh, self.offset, data)
            .await?;
        self.verifiers.extend(verifiers);
        self.offset += data.len() as u64;
        Ok(())
    }

    fn spawn_write(&mut self) {
        let data = std::mem::take(&mut self.buffer);
        let (client, fh, what) = (Arc::clone(&self.client), self.fh.clone(), self.what.clone());
        let offset = self.offset;
        self.offset += data.len() as u64;
        self.in_flight.push_back(
            self.handle
                .spawn(async move { client.write(&what, &fh, offset, &data).await }),
        );
    }

    fn record(
        &mut self,
        joined: Result<io::Result<Option<writeverf3>>, tokio::task::JoinError>,
    ) -> io::Result<()> {
        let verifier = joined.map_err(|e| io::Error::other(format!("{}: {e}", self.what)))??;
        self.verifiers.extend(verifier);
        Ok(())
    }

    /// Sends what is left, makes it all stable and renames the file to `name` in `dir`.
    pub async fn complete(&mut self, dir: &nfs_fh3, name: &[u8]) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.spawn_write();
        }
        while let Some(task) = self.in_flight.pop_front() {
            let joined = task.await;
            self.record(joined)?;
        }
        let verifiers = std::mem::take(&mut self.verifiers);
        self.client.commit(&self.what, &self.fh, verifiers).await?;
        self.client
            .rename(&self.what, (&self.dir, &self.temp), (dir, name))
            .await?;
        self.done = true;
        Ok(())
    }

    /// [`TempFile::complete`] from synchronous code.
    pub fn complete_blocking(&mut self, dir: &nfs_fh3, name: &[u8]) -> io::Result<()> {
        let handle = self.handle.clone();
        block_on(&handle, self.complete(dir, name))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            // Not complete: the temporary file goes (in the background, best effort).
            let (client, dir, temp) = (
                Arc::clone(&self.client),
                self.dir.clone(),
                self.temp.clone(),
            );
            let what = format!("{} (temporary file)", self.what);
            self.handle.spawn(async move {
                let _ = client.remove(&what, &dir, &temp).await;
            });
        }
    }
}
