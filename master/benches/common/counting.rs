//! A global allocator that counts live heap bytes, shared by the
//! benchmarks that report memory (`mod counting;` in each).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes; install with `#[global_allocator]`.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Live allocations by size in bytes (the last counts every larger one).
static BY_SIZE: [AtomicIsize; SIZES] = [const { AtomicIsize::new(0) }; SIZES];
const SIZES: usize = 4097;

/// Heap bytes live now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Live allocations by size now, to compare two moments with [`grown`].
#[allow(dead_code)] // not every benchmark breaks its memory down
pub fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

/// The allocation sizes whose live bytes grew most from `before` to
/// `after`: (size, allocations more), largest growth first. Sizes of
/// 4 KiB and more are counted together, under 4096.
#[allow(dead_code)]
pub fn grown(before: &[isize], after: &[isize], top: usize) -> Vec<(usize, isize)> {
    let mut d: Vec<(usize, isize)> = (0..SIZES).map(|s| (s, after[s] - before[s])).collect();
    d.sort_by_key(|&(size, n)| std::cmp::Reverse(size as isize * n));
    d.truncate(top);
    d
}

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        BY_SIZE[l.size().min(SIZES - 1)].fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BY_SIZE[l.size().min(SIZES - 1)].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}
