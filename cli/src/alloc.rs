//! The process's allocator: mimalloc in a master, the system's everywhere
//! else.
//!
//! A master allocates and frees for every message it decodes and every
//! record it keeps; under glibc's allocator a failover's 40,000
//! re-registrations spent a fifth of the new leader's CPU in `malloc`,
//! `free` and their consolidations, and mimalloc admits them 14 % faster
//! (BENCHMARKS.md, issue 17). The same binary is also the agent's container
//! launcher, whose forks mimalloc makes slower, so the choice is made per
//! process, once, by [`use_mimalloc`]: before it every block comes from the
//! system's allocator, after it from mimalloc, and each block goes back to
//! the allocator that owns it (mimalloc tells its own blocks apart by
//! address, `mi_is_in_heap_region`, a lookup in its segment map).

// A global allocator is `unsafe` to implement; each method forwards to
// one of two allocators under the same contract.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// Set once, never cleared: from then on new blocks come from mimalloc.
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// New blocks from mimalloc from now on, for the rest of the process.
pub fn use_mimalloc() {
    MIMALLOC.store(true, Ordering::Release);
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3): how long freed
/// memory waits before it goes back to the OS; -1 is never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// What one step of [`warm`] touches.
const WARM_CHUNK: usize = 4 << 20;

/// Makes `bytes` of mimalloc's heap resident ahead of need, from a thread
/// of its own, and has freed memory stay resident from now on: a master
/// standing by pays the kernel's zeroing of the pages a failover will fill
/// (a new leader grew by 1.5 GiB while 40,000 agents re-registered, and
/// first touches were a fifth of its CPU, BENCHMARKS.md) before it is
/// needed, not during it. Freed memory is never returned to the OS, so
/// the master's resident size stays at its peak. Call before any other
/// thread starts (mimalloc's options are not thread safe), after
/// [`use_mimalloc`].
pub fn keep_warm(bytes: usize) -> Option<std::thread::JoinHandle<()>> {
    if bytes == 0 || !mimalloc_now() {
        return None;
    }
    // SAFETY: one option set while the process has one thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    std::thread::Builder::new()
        .name("mezzo-warm".into())
        .spawn(move || warm(bytes))
        .ok()
}

/// Touches `bytes` of fresh blocks, a page at a time, and frees them: the
/// pages stay with mimalloc (no purge), resident, for any size of block.
fn warm(bytes: usize) {
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(bytes / WARM_CHUNK + 1);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WARM_CHUNK);
        let mut block = Vec::<u8>::with_capacity(n);
        for page in block.spare_capacity_mut().chunks_mut(4096) {
            page[0].write(0);
        }
        // The writes must happen: the block is read back through a
        // black box before it is kept.
        std::hint::black_box(&mut block);
        held.push(block);
        left -= n;
    }
    drop(held);
}

/// The global allocator of the `mezzo` binary (see the module docs).
pub struct Allocator;

fn mimalloc_now() -> bool {
    MIMALLOC.load(Ordering::Acquire)
}

/// Whether `ptr` is mimalloc's. Before [`use_mimalloc`] no block is.
fn owned_by_mimalloc(ptr: *mut u8) -> bool {
    // SAFETY: a read-only lookup of an address in mimalloc's segment map;
    // it dereferences nothing.
    mimalloc_now() && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: every block is allocated by exactly one of the two allocators,
// with the caller's layout, and freed or resized by the one that owns it
// (`owned_by_mimalloc`); a system block resized after the switch moves to
// a mimalloc block of the new size, with its contents copied.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if mimalloc_now() {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if mimalloc_now() {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed to the block's owner.
        unsafe {
            if owned_by_mimalloc(ptr) {
                MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed to the block's owner; a
        // system block moves to mimalloc once the switch is made: a new
        // block of the new size (same alignment), the common prefix
        // copied, the old block freed by its owner.
        unsafe {
            if owned_by_mimalloc(ptr) {
                return MiMalloc.realloc(ptr, layout, new_size);
            }
            if !mimalloc_now() {
                return System.realloc(ptr, layout, new_size);
            }
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = MiMalloc.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                System.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the test `name` again alone in a process of its own, unless
    /// this is that process: the switch to mimalloc lasts for the process,
    /// and `cargo test` runs every test of the binary in one (nextest runs
    /// each in its own already). True when the caller is to stop here.
    fn ran_apart(name: &str) -> bool {
        const CHILD: &str = "MEZZO_ALLOC_TEST_ALONE";
        if std::env::var_os(CHILD).is_some() {
            return false;
        }
        let exe = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(exe)
            .args([name, "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .status()
            .expect("run the test apart");
        assert!(status.success(), "{name} failed in a process of its own");
        true
    }

    /// The switch as a master makes it, in this test process (whose
    /// global allocator this is): blocks made before it go back to the
    /// system's allocator, a system block grown after it moves to mimalloc
    /// with its contents, and new blocks are mimalloc's.
    #[test]
    fn each_block_goes_back_to_the_allocator_that_made_it() {
        if ran_apart("alloc::tests::each_block_goes_back_to_the_allocator_that_made_it") {
            return;
        }
        let before = vec![1u8; 1000];
        let mut grown = vec![2u8; 100];
        assert!(!owned_by_mimalloc(before.as_ptr().cast_mut()));
        use_mimalloc();
        let after = vec![3u8; 1000];
        assert!(owned_by_mimalloc(after.as_ptr().cast_mut()));
        assert!(!owned_by_mimalloc(before.as_ptr().cast_mut()));
        assert!(!owned_by_mimalloc(grown.as_ptr().cast_mut()));
        grown.resize(100_000, 4);
        assert!(owned_by_mimalloc(grown.as_ptr().cast_mut()));
        assert!(grown[..100].iter().all(|&b| b == 2) && grown[100..].iter().all(|&b| b == 4));
        drop((before, after, grown));
        // Both allocators still work after the frees.
        let again = Box::new([5u8; 10]);
        assert!(owned_by_mimalloc(again.as_ptr().cast_mut()));
    }

    /// This process's resident size.
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("rss");
        pages * 4096
    }

    /// Warmed memory stays resident once freed, and new blocks then take
    /// it instead of fresh pages.
    #[test]
    fn a_warmed_heap_stays_resident_and_serves_new_blocks() {
        if ran_apart("alloc::tests::a_warmed_heap_stays_resident_and_serves_new_blocks") {
            return;
        }
        use_mimalloc();
        // The option's number names mimalloc's purge delay (its default,
        // 1 s, in v3), which warming turns off: without that the warmed
        // pages would go back to the OS a while after this test looks.
        // SAFETY: reads of an option.
        let purge_delay = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(purge_delay(), 1000, "not mimalloc's purge delay");
        let before = resident();
        keep_warm(96 << 20).expect("a thread").join().expect("warmed");
        assert_eq!(purge_delay(), -1, "freed memory would go back to the OS");
        let warmed = resident();
        assert!(warmed >= before + (90 << 20), "warmed {before} -> {warmed}");
        let mut blocks = Vec::new();
        for i in 0..48 {
            let mut b = vec![0u8; 1 << 20];
            b.iter_mut().step_by(4096).for_each(|x| *x = i);
            blocks.push(b);
        }
        let used = resident();
        assert!(
            used < warmed + (16 << 20),
            "48 MiB of new blocks took fresh pages: {warmed} -> {used}"
        );
        assert!(blocks.iter().enumerate().all(|(i, b)| b[4096] == i as u8));
    }
}
