//! Memory freed when client connections close goes back to the system (issue 22).
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
