//! Read buffers kept for reuse. A fresh buffer of a few MiB costs the kernel a page fault
//! and a zeroed page per 4 KiB on every read: a fifth of a restore's CPU time went there.
//! A kept buffer costs nothing; a few are kept, so idle memory stays bounded.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers kept at most (restore reads about this many ranges at once).
const KEEP: usize = 4;
/// Smaller reads come from malloc's free lists anyway.
const MIN: usize = 256 << 10;
/// Larger buffers are not kept.
const MAX: usize = 32 << 20;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// `len` bytes filled by `fill`, in a kept buffer when there is one.
pub fn filled<E>(len: usize, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<Bytes, E> {
    if !(MIN..=MAX).contains(&len) {
        let mut buf = vec![0; len];
        fill(&mut buf)?;
        return Ok(Bytes::from(buf));
    }
    let mut buf = KEPT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    // Only the part never used before is zeroed; the rest is overwritten by `fill`.
    if buf.len() < len {
        buf.resize(len, 0);
    }
    fill(&mut buf[..len])?;
    Ok(Bytes::from_owner(Kept { buf, len }))
}

/// A kept buffer's first `len` bytes; back to the kept ones when dropped.
struct Kept {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEEP {
            kept.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filled;

    #[test]
    fn reused_buffers_hold_only_what_was_filled() {
        let first = filled::<()>(1 << 20, |b| {
            b.fill(7);
            Ok(())
        })
        .unwrap();
        assert!(first.iter().all(|&b| b == 7));
        drop(first);
        // A shorter read into the same buffer sees its own bytes and length only.
        let second = filled::<()>(300 << 10, |b| {
            b.fill(9);
            Ok(())
        })
        .unwrap();
        assert_eq!(second.len(), 300 << 10);
        assert!(second.iter().all(|&b| b == 9));
        let failed = filled(512 << 10, |_| Err("read failed"));
        assert_eq!(failed.unwrap_err(), "read failed");
        let small = filled::<()>(10, |b| {
            b.copy_from_slice(b"0123456789");
            Ok(())
        })
        .unwrap();
        assert_eq!(&small[..], b"0123456789");
    }
}
