//! What every fuzz target links: an allocator that aborts the process on an allocation of
//! more than [`ALLOC_MAX`] bytes, so that a decoder allocating from a length field it has not
//! checked is a crash, not a silent reservation of gigabytes. libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's allocator hooks, and the targets are built without
//! one. (C code, zstd's, allocates through malloc directly and is not watched.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation a target may make: 1 GiB (the RSS limit is 2 GiB).
pub const ALLOC_MAX: usize = 1 << 30;

/// The bound on zeroed allocations: [`ALLOC_MAX`] unless a target has raised it
/// ([`allow_zeroed_allocations_up_to`]).
static ZEROED_LIMIT: AtomicUsize = AtomicUsize::new(ALLOC_MAX);

/// Raises the bound on *zeroed* allocations for a target whose dependency is known to reserve
/// a zeroed buffer of a length it has not checked yet, before reading into it (FUZZING.md
/// names each one). Such a buffer is mapped lazily by the system and costs no memory until it
/// is filled, which the read that follows refuses; every other allocation keeps the bound.
pub fn allow_zeroed_allocations_up_to(bytes: usize) {
    ZEROED_LIMIT.store(bytes.max(ALLOC_MAX), Ordering::Relaxed);
}

struct Bounded;

fn check(size: usize, limit: usize) {
    if size > limit {
        // No formatting: it could allocate.
        let _ = std::io::stderr()
            .write_all(b"stowage-fuzz: an allocation above the bound (a length field unchecked?)\n");
        std::process::abort()
    }
}

// SAFETY: every call goes to `System` unchanged, but for refusing (aborting on) sizes above
// the bound, which returns nothing.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), ALLOC_MAX);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), ZEROED_LIMIT.load(Ordering::Relaxed));
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size, ALLOC_MAX);
        // SAFETY: as for alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
