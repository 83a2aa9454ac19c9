//! What every fuzz target links: an allocator that aborts the process on an allocation of
//! more than [`ALLOC_MAX`] bytes, so that a decoder allocating from a length field it has not
//! checked is a crash, not a silent reservation of gigabytes. libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's allocator hooks, and the targets are built without
//! one. (C code, zstd's, allocates through malloc directly and is not watched.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation a target may make: 1 GiB (the RSS limit is 2 GiB).
pub const ALLOC_MAX: usize = 1 << 30;

struct Bounded;

fn too_large() -> ! {
    // No formatting: it could allocate.
    let _ = std::io::stderr()
        .write_all(b"stowage-fuzz: an allocation of more than 1 GiB (a length field unchecked?)\n");
    std::process::abort()
}

// SAFETY: every call goes to `System` unchanged, but for refusing (aborting on) sizes above
// ALLOC_MAX, which returns nothing.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_MAX {
            too_large();
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_MAX {
            too_large();
        }
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_MAX {
            too_large();
        }
        // SAFETY: as for alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
