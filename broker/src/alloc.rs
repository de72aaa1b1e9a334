//! The global allocator: the system allocator, except that allocations of 1 GiB or more are
//! made as `MAP_NORESERVE` anonymous mappings.
//!
//! Why: the protocol codec sizes a `Vec` from an array length read off the wire before it
//! has checked that the bytes exist. A 20-byte frame claiming 2^31 elements asks for ~90 GB;
//! the kernel refuses a normal allocation of that size, and Rust aborts the process on a
//! failed allocation. A no-reserve mapping of that size succeeds without touching memory,
//! the decoder then fails on the missing bytes, and the mapping is released. Legitimate
//! allocations that large do not occur (frames are bounded by `socket.request.max.bytes`).
//! The request fuzz test in `api::tests` covers this.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct Allocator;

const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

fn huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if huge(&layout) {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if huge(&layout) {
            map(layout.size()) // anonymous mappings are zero-filled
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(&layout) {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !huge(&layout) && !huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
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
    #[test]
    fn absurd_capacity_does_not_abort() {
        let v: Vec<[u8; 40]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        let mut v: Vec<u8> = Vec::with_capacity(10);
        v.extend_from_slice(b"still works");
        assert_eq!(v.len(), 11);
    }
}
