//! The global allocator (mimalloc, called the cheap way) and giving memory back to the system
//! when client connections close (issue 22).
//!
//! mimalloc (the global allocator, `main.rs`) returns a free page to the system only after a
//! delay (1 s), and only when the thread that owns it calls into the allocator again: a
//! worker left idle after a burst of connections kept its peak for good (214 MiB from 27 after
//! 2,000 connections closed, `make bench-conns`). Purging at once (`purge_delay` 0) fixed that
//! but cost 8-21% more CPU per request (an `madvise` per page emptied). Instead each worker
//! thread runs a small task that asks mimalloc, once a second, to collect that thread's heap:
//! pages past their delay go back to the system whether or not the thread is busy.

use std::time::Duration;

/// How often a worker thread's heap is collected.
const EVERY: Duration = Duration::from_secs(1);

#[cfg(not(feature = "system-allocator"))]
thread_local! {
    static COLLECTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Starts, once per thread, the task that collects this thread's heap (called from a task on
/// a worker thread; with Pingora's `work_stealing: false` each worker thread is a runtime of
/// its own, so the task stays on the thread it was started from).
pub fn collect_on_this_thread() {
    #[cfg(not(feature = "system-allocator"))]
    if !COLLECTING.with(|c| c.replace(true)) {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // SAFETY: no preconditions; collects the calling thread's mimalloc heap.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    }
    #[cfg(feature = "system-allocator")]
    let _ = EVERY;
}

/// mimalloc, through its plain entry points wherever they give the alignment asked for anyway.
///
/// The `mimalloc` crate's allocator calls the `_aligned` entry points for every allocation, and
/// mimalloc 3 serves those from its generic aligned path, over-allocating, whenever the block
/// size is not a power of two (a 5 KiB buffer, a 10 KiB future), although any block of such a
/// size is aligned enough: 22 allocations of each proxied request took that path (callgrind).
/// `purpleprotocol/mimalloc_rust#170` proposes the same dispatch in the crate.
pub struct MiMalloc;

/// Up to this alignment, a mimalloc block whose size is a multiple of the alignment is aligned
/// to it: size classes are multiples of 8 (of 16 above 16), pages start 16-aligned
/// (`MI_MAX_ALIGN_SIZE`; no padding, which only mimalloc's `secure` build adds).
const NATURAL_ALIGN: usize = 16;

fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && size != 0 && size % align == 0
}

// SAFETY: every call goes to mimalloc, which returns blocks of at least the size asked for,
// aligned as asked (the plain entry points only where `natural` holds, see `NATURAL_ALIGN`),
// and frees or resizes any block it returned, whichever entry point made it.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if natural(layout.size(), layout.align()) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if natural(layout.size(), layout.align()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if natural(new_size, layout.align()) {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
#[path = "allocator/tests.rs"]
mod tests;
