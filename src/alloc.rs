//! The binary's global allocator: the system allocator plus a small cache of **large freed blocks**, reused for
//! the next request of exactly the same size and alignment.
//!
//! Why: a bound pass allocates and frees the same tensor sizes every training step. glibc serves every block
//! above its mmap threshold (32 MB at most, see `main.rs`) with a fresh `mmap` and returns it with `munmap`, so a
//! `[1250, 32, 28, 28]` f32 tensor (125 MB, `mnist_large`) costs 30,000 page faults and the kernel's zeroing of
//! every page, each step, each time. Blocks from 32 MB up are kept here instead (up to [`SLOTS`] blocks and a
//! sixteenth of the physical memory in total; beyond that they go back to the system) and handed out again
//! without touching the kernel. Smaller blocks, and everything else, go straight to the system allocator.
//!
//! The cache is a fixed array behind a `Mutex` (which neither allocates nor recurses into the allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smallest block kept: glibc's largest mmap threshold (blocks below it stay on glibc's own heap).
pub const LARGE: usize = 32 << 20;
/// Most blocks kept at once.
pub const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Block {
    ptr: usize,
    size: usize,
    align: usize,
}

const EMPTY: Block = Block { ptr: 0, size: 0, align: 0 };

/// [`GlobalAlloc`] over [`System`] with the large-block cache.
pub struct CachingAlloc {
    slots: Mutex<[Block; SLOTS]>,
    cached: AtomicUsize,
    cap: AtomicUsize,
}

impl CachingAlloc {
    pub const fn new() -> Self {
        CachingAlloc { slots: Mutex::new([EMPTY; SLOTS]), cached: AtomicUsize::new(0), cap: AtomicUsize::new(0) }
    }

    /// Bytes the cache may hold: a sixteenth of the physical memory (computed once, without allocating).
    fn cap(&self) -> usize {
        match self.cap.load(Ordering::Relaxed) {
            0 => {
                #[cfg(unix)]
                // SAFETY: sysconf only reads system values.
                let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
                #[cfg(not(unix))]
                let (pages, page) = (0i64, 0i64);
                let phys = if pages > 0 && page > 0 { pages as usize * page as usize } else { 8 << 30 };
                let cap = (phys / 16).max(1);
                self.cap.store(cap, Ordering::Relaxed);
                cap
            }
            c => c,
        }
    }

    fn take(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() < LARGE {
            return None;
        }
        let mut slots = self.slots.lock().ok()?;
        let slot = slots.iter_mut().find(|b| b.ptr != 0 && b.size == layout.size() && b.align == layout.align())?;
        let ptr = slot.ptr as *mut u8;
        *slot = EMPTY;
        self.cached.fetch_sub(layout.size(), Ordering::Relaxed);
        Some(ptr)
    }

    /// Keeps a freed block; false when it is small or the cache is full.
    fn keep(&self, ptr: *mut u8, layout: Layout) -> bool {
        if layout.size() < LARGE || self.cached.load(Ordering::Relaxed) + layout.size() > self.cap() {
            return false;
        }
        let Ok(mut slots) = self.slots.lock() else { return false };
        let Some(slot) = slots.iter_mut().find(|b| b.ptr == 0) else { return false };
        *slot = Block { ptr: ptr as usize, size: layout.size(), align: layout.align() };
        self.cached.fetch_add(layout.size(), Ordering::Relaxed);
        true
    }
}

impl Default for CachingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block handed out is either fresh from `System` with the caller's layout, or a block that
// `System` gave out with exactly the same size and alignment and that its owner has freed (it sits in one slot
// only, and is removed from it under the lock before it is returned). Blocks go back to `System` with the layout
// they were allocated with.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(p) => p,
            None => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(p) => {
                std::ptr::write_bytes(p, 0, layout.size());
                p
            }
            None => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.keep(ptr, layout) {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LARGE && new_size < LARGE {
            return System.realloc(ptr, layout, new_size);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed large block comes back for the same layout (and zeroed when asked), a different size does not get
    /// it, small blocks are not kept, and a realloc across the threshold keeps the contents.
    #[test]
    fn reuses_large_blocks_of_the_same_layout() {
        let a = CachingAlloc::new();
        let big = Layout::from_size_align(LARGE + 4096, 64).expect("layout");
        let other = Layout::from_size_align(LARGE + 8192, 64).expect("layout");
        let small = Layout::from_size_align(1024, 8).expect("layout");
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            p.write(7);
            a.dealloc(p, big);
            assert_eq!(a.cached.load(Ordering::Relaxed), big.size());
            let q = a.alloc(other);
            assert_ne!(q, p);
            let z = a.alloc_zeroed(big);
            assert_eq!(z, p);
            assert_eq!(z.read(), 0);
            assert_eq!(a.cached.load(Ordering::Relaxed), 0);
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert_eq!(a.cached.load(Ordering::Relaxed), 0);
            z.write(42);
            let r = a.realloc(z, big, 100);
            assert_eq!(r.read(), 42);
            assert_eq!(a.cached.load(Ordering::Relaxed), big.size());
            a.dealloc(r, Layout::from_size_align(100, 64).expect("layout"));
            a.dealloc(q, other);
        }
    }
}
