//! Recently read windows of packs, for trees: trees sit in packs of their own, so one
//! aligned window read brings many directories at once. A restore or `ls` of a snapshot
//! with a few thousand directories then makes a handful of requests instead of one per
//! directory, which is what decides their speed on S3 or NFS.
//!
//! Reads are single-flight: the many directory tasks a restore starts at once all wait for
//! the one read of the window they need instead of each reading it.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::format::id::Id;

/// Windows start at multiples of this and span at least this much.
pub const WINDOW: u64 = 2 << 20;
/// Windows kept (bounding the memory to about this many times [`WINDOW`]).
const KEPT: usize = 4;

/// A window's bytes, read once by whoever asks first.
pub type Cell = Arc<OnceCell<Bytes>>;

pub struct PackWindows {
    windows: Mutex<VecDeque<(Id, u64, Cell)>>,
    /// Window reads under way at once: the walks that load trees ahead ask for many
    /// windows at a time, and each read holds a window's bytes.
    reads: tokio::sync::Semaphore,
}

/// Window reads under way at once.
const READS: usize = 2;

impl Default for PackWindows {
    fn default() -> Self {
        PackWindows {
            windows: Mutex::default(),
            reads: tokio::sync::Semaphore::new(READS),
        }
    }
}

impl PackWindows {
    /// The cell of the window of `pack` starting at `start`: shared with everyone asking for
    /// the same window while it is kept; the least recently used window is dropped beyond
    /// the bound.
    pub fn cell(&self, pack: Id, start: u64) -> Cell {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = windows
            .iter()
            .position(|(p, s, _)| *p == pack && *s == start)
        {
            // Most recently used last: a walk keeps coming back to the windows of the
            // directories it is in, while those it has left age out.
            let hit = windows.remove(at).expect("found");
            let cell = Arc::clone(&hit.2);
            windows.push_back(hit);
            return cell;
        }
        if windows.len() >= KEPT {
            windows.pop_front();
        }
        let cell = Cell::default();
        windows.push_back((pack, start, Arc::clone(&cell)));
        cell
    }
}

impl PackWindows {
    /// Waits for a turn to read a window ([`READS`] at once).
    pub async fn read_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.reads.acquire().await.expect("semaphore open")
    }
}

/// The aligned window to read for `range` (its end may lie past the pack's end; reads are
/// clipped there).
pub fn window_for(range: &Range<u64>) -> Range<u64> {
    let start = range.start / WINDOW * WINDOW;
    start..(start + WINDOW).max(range.end)
}

/// `range` of a pack out of `window` (read from `window_start`), when the window holds it.
pub fn slice(window: &Bytes, window_start: u64, range: &Range<u64>) -> Option<Bytes> {
    let end = window_start + window.len() as u64;
    (window_start <= range.start && range.end <= end).then(|| {
        window.slice((range.start - window_start) as usize..(range.end - window_start) as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_cover_the_range() {
        assert_eq!(window_for(&(10..20)), 0..WINDOW);
        assert_eq!(window_for(&(WINDOW + 5..WINDOW + 9)), WINDOW..2 * WINDOW);
        assert_eq!(window_for(&(WINDOW - 5..WINDOW + 9)), 0..WINDOW + 9);
    }

    #[test]
    fn slices_come_only_from_inside_a_window() {
        let window = Bytes::from_static(b"0123456789");
        assert_eq!(
            slice(&window, 100, &(102..105)).as_deref(),
            Some(&b"234"[..])
        );
        assert_eq!(slice(&window, 100, &(105..111)), None, "past the window");
        assert_eq!(slice(&window, 100, &(99..101)), None, "before the window");
    }

    #[tokio::test]
    async fn one_read_per_window_and_a_bounded_number_kept() {
        let windows = PackWindows::default();
        let (a, b) = (Id::hash_of(b"a"), Id::hash_of(b"b"));
        let first = windows.cell(a, 0);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, ()>(Bytes::from_static(b"window"))
        };
        let again = windows.cell(a, 0);
        let (x, y) = tokio::join!(first.get_or_try_init(read), again.get_or_try_init(read));
        assert_eq!(
            (x, y),
            (
                Ok(&Bytes::from_static(b"window")),
                Ok(&Bytes::from_static(b"window"))
            )
        );
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "read once"
        );
        assert!(
            !Arc::ptr_eq(&first, &windows.cell(b, 0)),
            "another pack, another window"
        );
        for start in 1..=KEPT as u64 {
            windows.cell(b, start * WINDOW);
        }
        assert!(
            !Arc::ptr_eq(&first, &windows.cell(a, 0)),
            "the oldest window was dropped"
        );
    }
}
