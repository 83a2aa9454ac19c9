//! Recently read windows of packs, for trees: trees sit in packs of their own, so one
//! aligned window read brings many directories at once. A restore or `ls` of a snapshot
//! with a few thousand directories then makes a handful of requests instead of one per
//! directory, which is what decides their speed on S3 or NFS.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use crate::id::Id;

/// Windows start at multiples of this and span at least this much.
pub const WINDOW: u64 = 2 << 20;
/// Windows kept (bounding the memory to about this many times [`WINDOW`]).
const KEPT: usize = 8;

struct Window {
    pack: Id,
    start: u64,
    bytes: Bytes,
}

#[derive(Default)]
pub struct PackWindows {
    windows: Mutex<VecDeque<Window>>,
}

impl PackWindows {
    /// The bytes of `range` of `pack`, when a kept window holds all of them.
    pub fn get(&self, pack: &Id, range: &Range<u64>) -> Option<Bytes> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.iter().find_map(|w| {
            let end = w.start + w.bytes.len() as u64;
            (w.pack == *pack && w.start <= range.start && range.end <= end).then(|| {
                w.bytes
                    .slice((range.start - w.start) as usize..(range.end - w.start) as usize)
            })
        })
    }

    /// Keeps a window read from `pack` at `start`, dropping the oldest beyond the bound.
    pub fn insert(&self, pack: Id, start: u64, bytes: Bytes) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= KEPT {
            windows.pop_front();
        }
        windows.push_back(Window { pack, start, bytes });
    }
}

/// The aligned window to read for `range` (its end may lie past the pack's end; reads are
/// clipped there).
pub fn window_for(range: &Range<u64>) -> Range<u64> {
    let start = range.start / WINDOW * WINDOW;
    start..(start + WINDOW).max(range.end)
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
    fn kept_windows_answer_ranges_inside_them_only() {
        let windows = PackWindows::default();
        let (a, b) = (Id::hash_of(b"a"), Id::hash_of(b"b"));
        windows.insert(a, 100, Bytes::from_static(b"0123456789"));
        assert_eq!(windows.get(&a, &(102..105)).as_deref(), Some(&b"234"[..]));
        assert_eq!(windows.get(&a, &(105..111)), None, "past the window");
        assert_eq!(windows.get(&b, &(102..105)), None, "another pack");
        for i in 0..KEPT as u64 {
            windows.insert(b, 1000 * (i + 1), Bytes::from_static(b"x"));
        }
        assert_eq!(
            windows.get(&a, &(102..105)),
            None,
            "the oldest window was dropped"
        );
    }
}
