//! The one place with `unsafe`: page-aligned locked buffers for secret bytes
//! and process-wide hardening.
//!
//! Why page-aligned, one allocation per secret: `mlock`/`munlock` work on
//! whole pages and do not nest, so two secrets sharing a page would unlock
//! each other on drop, and `madvise(MADV_DONTDUMP)` rejects unaligned starts.

// The workspace denies `unsafe_code`; this module is the audited exception.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

const PAGE: usize = 4096;

/// Set once an `mlock` fails (usually `RLIMIT_MEMLOCK`), so we warn once and
/// stop trying instead of failing every secret.
static MLOCK_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Turns off core dumps and ptrace-style access for this process: a crash
/// must not leave secret bytes in a core file, and other processes of the
/// same uid must not read our memory through /proc/<pid>/mem.
pub fn harden_process() -> io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// True when some buffer could not be locked into RAM (it may be swapped).
pub fn mlock_unavailable() -> bool {
    MLOCK_UNAVAILABLE.load(Ordering::Relaxed)
}

/// A fixed-size, page-aligned, zero-initialised buffer that is locked in RAM
/// when the limit allows, excluded from core dumps, and wiped before it is
/// freed. It never grows, so no copy of its bytes is left behind by a
/// reallocation.
pub struct LockedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    locked: bool,
}

// SAFETY: LockedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for LockedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for LockedBuf {}

impl LockedBuf {
    pub fn zeroed(len: usize) -> LockedBuf {
        let size = len.max(1).div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(size, PAGE).expect("page-rounded layout is valid");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let mut buf = LockedBuf { ptr, len, layout, locked: false };
        buf.lock();
        buf
    }

    fn lock(&mut self) {
        let base = self.ptr.as_ptr().cast::<core::ffi::c_void>();
        let size = self.layout.size();
        // SAFETY: [base, base+size) is our own live, page-aligned allocation.
        unsafe {
            let _ = rustix::mm::madvise(base, size, rustix::mm::Advice::LinuxDontDump);
            if !MLOCK_UNAVAILABLE.load(Ordering::Relaxed) {
                match rustix::mm::mlock(base, size) {
                    Ok(()) => self.locked = true,
                    Err(_) => MLOCK_UNAVAILABLE.store(true, Ordering::Relaxed),
                }
            }
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Shortens the visible length to `len` (no reallocation); the bytes
    /// cut off are wiped at once.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            zeroize::Zeroize::zeroize(&mut self.as_mut_slice()[len..]);
            self.len = len;
        }
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        let size = self.layout.size();
        // SAFETY: whole allocation is ours; volatile writes keep the wipe from
        // being optimised away before the free.
        unsafe {
            let whole = std::slice::from_raw_parts_mut(self.ptr.as_ptr(), size);
            zeroize::Zeroize::zeroize(whole);
            if self.locked {
                let _ = rustix::mm::munlock(self.ptr.as_ptr().cast(), size);
            }
            alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

/// Registers an owned descriptor with tokio's reactor, e.g. a pidfd, which
/// polls readable once its process has exited. Must run inside a runtime.
pub fn watch_owned_fd(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: `register` needs the descriptor to stay open, and to name the
    // same file, for as long as it is registered. The `OwnedFd` is moved into
    // the `AsyncFd`, which deregisters it before closing it on drop; nothing
    // else can close it meanwhile.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_sized_exactly() {
        let mut b = LockedBuf::zeroed(10);
        assert_eq!(b.as_slice().len(), 10);
        assert_eq!(b.as_slice().as_ptr() as usize % PAGE, 0);
        b.as_mut_slice().copy_from_slice(b"0123456789");
        assert_eq!(b.as_slice(), b"0123456789");
        let empty = LockedBuf::zeroed(0);
        assert!(empty.as_slice().is_empty());
    }
}
