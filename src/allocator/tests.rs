//! Unit tests of `allocator`: the global allocator's blocks are aligned, sized and resized as
//! asked, whichever mimalloc entry point serves them.

use std::alloc::{GlobalAlloc, Layout};

use super::*;

/// Sizes around every small size class, the medium ones and a large block.
fn sizes() -> impl Iterator<Item = usize> {
    (1..=600)
        .chain((601..=70_000).step_by(97))
        .chain([1 << 20, (1 << 20) + 24])
}

#[test]
fn blocks_are_aligned_and_hold_what_is_written() {
    let a = MiMalloc;
    for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
        for size in sizes().filter(|s| s % align == 0 || align > 16) {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                std::ptr::write_bytes(p, 0xa5, size);
                let grown = size * 3 + 5;
                let q = a.realloc(p, layout, grown);
                assert_eq!(q as usize % align, 0, "grown from {size} align {align}");
                assert!(
                    (0..size).all(|i| *q.add(i) == 0xa5),
                    "size {size} align {align}"
                );
                let shrunk = (size / 2).max(1);
                let r = a.realloc(q, Layout::from_size_align(grown, align).unwrap(), shrunk);
                assert_eq!(r as usize % align, 0, "shrunk from {grown} align {align}");
                assert!((0..shrunk).all(|i| *r.add(i) == 0xa5));
                a.dealloc(r, Layout::from_size_align(shrunk, align).unwrap());
            }
        }
    }
}

#[test]
fn zeroed_blocks_are_zero_even_where_freed_blocks_were() {
    let a = MiMalloc;
    for size in sizes().step_by(7) {
        let layout = Layout::from_size_align(size, 8.min(size.next_power_of_two())).unwrap();
        unsafe {
            let dirty = a.alloc(layout);
            std::ptr::write_bytes(dirty, 0xff, size);
            a.dealloc(dirty, layout);
            let p = a.alloc_zeroed(layout);
            assert_eq!(p as usize % layout.align(), 0);
            assert!((0..size).all(|i| *p.add(i) == 0), "size {size}");
            a.dealloc(p, layout);
        }
    }
}
