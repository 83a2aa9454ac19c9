//! Retries of the errors a network mount returns for a while and then recovers from: a file
//! handle gone stale (ESTALE: the server restarted, re-exported, or a file was replaced
//! under the client's cached handle), an I/O error or timeout of a soft mount (EIO,
//! ETIMEDOUT). Local disks never return them for long; on NFS a retry with a fresh lookup
//! (by path, which a new `open` or `read_dir` does) usually succeeds. When the error
//! persists the message says so and what to look at. Every retry is logged at `warn`
//! (`tracing`): a mount that keeps failing and recovering shows up in the log.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

/// Attempts before a transient error is reported (with pauses of 0.1, 0.2, 0.4, 0.8 s).
pub const ATTEMPTS: u32 = 5;

/// Whether `e` is an error a network mount recovers from.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ESTALE) | Some(libc::EIO) | Some(libc::ETIMEDOUT)
    )
}

fn pause(attempt: u32) {
    std::thread::sleep(Duration::from_millis(100 << attempt.min(4)));
}

/// The final error, saying it persisted.
fn persisted(path: &Path, op: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "{}: {op}: {e}, still after {ATTEMPTS} attempts; on a network mount this means the \
             server is failing or the mount is stale (remount it)",
            path.display()
        ),
    )
}

/// Runs `f` until it succeeds, fails with a non-transient error, or has failed
/// [`ATTEMPTS`] times with transient ones. Blocks.
pub fn retry<T>(path: &Path, op: &str, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if is_transient(&e) && attempt < ATTEMPTS => {
                tracing::warn!(
                    path = %path.display(),
                    op,
                    attempt,
                    of = ATTEMPTS,
                    error = %e,
                    "transient error (network mount?); retrying"
                );
                pause(attempt);
                attempt += 1;
            }
            Err(e) if is_transient(&e) => return Err(persisted(path, op, e)),
            other => return other,
        }
    }
}

/// A reader that, on a transient error, opens its file again (by path: a fresh handle) and
/// goes on from where it was.
pub struct Reopening<R, F> {
    path: std::path::PathBuf,
    open: F,
    reader: R,
    position: u64,
}

impl<R: Read + Seek, F: FnMut() -> io::Result<R>> Reopening<R, F> {
    pub fn new(path: &Path, mut open: F) -> io::Result<Self> {
        let reader = retry(path, "open", &mut open)?;
        Ok(Reopening {
            path: path.to_path_buf(),
            open,
            reader,
            position: 0,
        })
    }
}

impl<R: Read + Seek, F: FnMut() -> io::Result<R>> Read for Reopening<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut attempt = 1;
        loop {
            match self.reader.read(buf) {
                Ok(n) => {
                    self.position += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_transient(&e) && attempt < ATTEMPTS => {
                    tracing::warn!(
                        path = %self.path.display(),
                        op = "read",
                        offset = self.position,
                        attempt,
                        of = ATTEMPTS,
                        error = %e,
                        "transient error (network mount?); reopening the file and retrying"
                    );
                    pause(attempt);
                    attempt += 1;
                    let position = self.position;
                    if let Ok(mut fresh) = (self.open)() {
                        if fresh.seek(SeekFrom::Start(position)).is_ok() {
                            self.reader = fresh;
                        }
                    }
                }
                Err(e) if is_transient(&e) => return Err(persisted(&self.path, "read", e)),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{self, Cursor, Read};
    use std::path::Path;

    use super::{retry, Reopening, ATTEMPTS};

    fn stale() -> io::Error {
        io::Error::from_raw_os_error(libc::ESTALE)
    }

    #[test]
    fn transient_errors_are_retried_then_reported_as_persisting() {
        let (captured, _guard) = crate::test_log::Captured::start();
        let calls = Cell::new(0);
        let value = retry(Path::new("/mnt/x"), "read_dir", || {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 | 2 => Err(stale()),
                _ => Ok(7),
            }
        });
        assert_eq!((value.expect("recovers"), calls.get()), (7, 3));
        let warned = captured.at(tracing::Level::WARN);
        assert_eq!(warned.len(), 2, "every retry is logged: {warned:?}");
        assert!(
            warned[1].contains("path=/mnt/x op=read_dir attempt=2 of=5 error=Stale"),
            "{warned:?}"
        );

        calls.set(0);
        let err = retry(Path::new("/mnt/x"), "read_dir", || -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::from_raw_os_error(libc::EIO))
        })
        .expect_err("persists");
        assert_eq!(calls.get(), ATTEMPTS);
        let text = err.to_string();
        assert!(
            text.contains("/mnt/x: read_dir") && text.contains("still after"),
            "{text}"
        );

        calls.set(0);
        let err = retry(Path::new("/mnt/x"), "open", || -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::from(io::ErrorKind::NotFound))
        })
        .expect_err("not transient");
        assert_eq!((calls.get(), err.kind()), (1, io::ErrorKind::NotFound));
    }

    /// Reads the file's bytes, failing with ESTALE once after `fail_after` bytes.
    struct Flaky {
        inner: Cursor<Vec<u8>>,
        fail_after: Option<u64>,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(at) = self.fail_after {
                if self.inner.position() >= at {
                    return Err(stale());
                }
                let room = (at - self.inner.position()) as usize;
                let n = buf.len().min(room);
                return self.inner.read(&mut buf[..n]);
            }
            self.inner.read(buf)
        }
    }

    impl io::Seek for Flaky {
        fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_stale_handle_mid_file_is_reopened_at_the_same_offset() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let opens = Cell::new(0);
        let mut reader = Reopening::new(Path::new("/mnt/blob"), || {
            opens.set(opens.get() + 1);
            Ok(Flaky {
                inner: Cursor::new(content.clone()),
                // The first handle goes stale a third of the way in.
                fail_after: (opens.get() == 1).then_some(33_333),
            })
        })
        .expect("open");
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .expect("read through the stale handle");
        assert!(out == content, "same bytes, none repeated or skipped");
        assert_eq!(opens.get(), 2);
    }
}
