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

/// The bound in force: [`ALLOC_MAX`] unless a target has raised it
/// ([`allow_allocations_up_to`]).
static LIMIT: AtomicUsize = AtomicUsize::new(ALLOC_MAX);

/// Raises the bound for a target whose dependency is known to reserve a length it has not
/// checked yet, before reading what it announces (FUZZING.md names each one, under "Found,
/// not fixed here"). The reservation is mapped lazily by the system and the read that follows
/// fails; the bound still catches anything larger.
pub fn allow_allocations_up_to(bytes: usize) {
    LIMIT.store(bytes.max(ALLOC_MAX), Ordering::Relaxed);
}

struct Bounded;

fn check(size: usize) {
    if size > LIMIT.load(Ordering::Relaxed) {
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
        check(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as for alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
