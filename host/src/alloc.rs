//! The process's memory allocator: the system allocator, except that very large blocks
//! are reserved as address space and backed only as they are written.
//!
//! # Why
//!
//! The Kafka protocol decoder (the `kafka-protocol` crate) reserves a vector for an
//! array's declared element count before it reads a single element. A request of ten
//! bytes can declare billions of elements: a few hundred gigabytes asked of `malloc`.
//! Under Linux's default (heuristic) overcommit such a request fails, and Rust answers
//! a failed allocation by aborting the process — one client's ten bytes would take
//! the broker down with every partition it leads, a failure no connection task can
//! catch. Found by the `kafka_request` fuzz target (docs/fuzzing.md).
//!
//! Blocks of [`LAZY_FROM`] bytes or more are therefore mapped with `MAP_NORESERVE`:
//! the kernel hands out the address space without promising the memory, so the
//! reservation succeeds, the decoder then fails on the bytes that are not there, and
//! the block is unmapped untouched. Pages are backed only when written, so what a
//! request can really occupy stays bounded by what its frame (at most
//! `kafka.max_frame_bytes`) can fill. Nothing else in the broker allocates blocks that
//! large; if something did, it would get memory that is committed page by page as it
//! is used, which is what Linux does for every allocation under overcommit anyway.
//!
//! Anonymous mappings are page aligned and zeroed, which covers every alignment up to a
//! page and `alloc_zeroed`; a layout needing more goes to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Smallest block reserved lazily: 1 GiB, far above any buffer the broker sizes itself
/// (segments' reads, frames and plugin memory are bounded by settings well below it).
pub const LAZY_FROM: usize = 1 << 30;

/// Largest alignment a fresh anonymous mapping guarantees.
const PAGE: usize = 4096;

/// The allocator; installed by the `quiver` library for every program that links it.
#[derive(Debug)]
pub struct Allocator;

fn lazy(size: usize, align: usize) -> bool {
    cfg!(target_os = "linux") && size >= LAZY_FROM && align <= PAGE
}

#[cfg(target_os = "linux")]
unsafe fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(target_os = "linux")]
unsafe fn release(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` and `size` are a mapping made by `reserve` (the caller's layout
    // says so), unmapped once.
    unsafe { libc::munmap(ptr.cast(), size) };
}

#[cfg(target_os = "linux")]
unsafe fn remap(ptr: *mut u8, size: usize, new_size: usize) -> *mut u8 {
    // SAFETY: `ptr` and `size` are a mapping made by `reserve`; MAYMOVE lets the kernel
    // pick a new address, and the old one is then gone, as `realloc` promises.
    let p = unsafe { libc::mremap(ptr.cast(), size, new_size, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(not(target_os = "linux"))]
unsafe fn remap(_ptr: *mut u8, _size: usize, _new_size: usize) -> *mut u8 {
    unreachable!("lazy reservations are made on Linux only")
}

#[cfg(not(target_os = "linux"))]
unsafe fn reserve(_size: usize) -> *mut u8 {
    unreachable!("lazy reservations are made on Linux only")
}

#[cfg(not(target_os = "linux"))]
unsafe fn release(_ptr: *mut u8, _size: usize) {
    unreachable!("lazy reservations are made on Linux only")
}

// SAFETY: every block is handed out once and freed by the path that made it, chosen
// by the same function of its layout (`lazy`) on both sides; the system allocator's
// contract holds for the others.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(layout.size(), layout.align()) {
            unsafe { reserve(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(layout.size(), layout.align()) {
            // Fresh anonymous pages read as zero.
            unsafe { reserve(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(layout.size(), layout.align()) {
            unsafe { release(ptr, layout.size()) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (was, will) = (
            lazy(layout.size(), layout.align()),
            lazy(new_size, layout.align()),
        );
        if !was && !will {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if was && will {
            // Moved by the page tables, never copied: a copy would write, and so
            // commit, every page of a block that was never touched.
            return unsafe { remap(ptr, layout.size(), new_size) };
        }
        // Crossing the threshold: the small side is under LAZY_FROM, so the copy is too.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_far_beyond_memory_succeeds_and_is_backed_as_written() {
        // 256 GiB: more than this machine's memory and swap together, so the system
        // allocator would refuse it under heuristic overcommit, and the process abort.
        let mut huge: Vec<u64> = Vec::with_capacity(32 << 30);
        assert!(huge.capacity() >= 32 << 30);
        huge.extend(0..1024);
        assert_eq!(huge[1023], 1023);
        huge.shrink_to_fit();
        assert_eq!(huge.iter().sum::<u64>(), 1023 * 1024 / 2);
    }

    #[test]
    fn a_lazy_block_grows_in_place_of_a_copy() {
        let mut v: Vec<u8> = Vec::with_capacity(LAZY_FROM);
        v.extend_from_slice(b"kept");
        v.reserve_exact(4 * LAZY_FROM);
        assert!(v.capacity() >= 4 * LAZY_FROM);
        assert_eq!(v, b"kept");
    }

    #[test]
    fn blocks_crossing_the_threshold_keep_their_contents() {
        let mut v = vec![7u8; 4096];
        v.reserve_exact(LAZY_FROM);
        assert!(v.capacity() >= LAZY_FROM + 4096);
        assert!(v.iter().all(|b| *b == 7));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, [7u8; 10]);
        let zeroed = vec![0u8; LAZY_FROM];
        assert_eq!(zeroed[LAZY_FROM - 1], 0);
    }
}
