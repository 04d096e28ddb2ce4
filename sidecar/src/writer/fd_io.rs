//! Whole-file I/O on descriptors for the writer: write, compare without a
//! second plain copy of the value, and zero before unlinking.

use super::Stamp;
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;
use seg_common::secret::SecretBytes;
use std::os::fd::{AsFd, OwnedFd};

pub(super) fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Compares our file's content with `value` without keeping a second copy of
/// the secret around: the file is read into a `SecretBytes`.
pub(super) fn same_bytes(fd: &OwnedFd, value: &SecretBytes) -> bool {
    let Ok(st) = rfs::fstat(fd) else { return false };
    if u64::try_from(st.st_size).ok() != Some(value.len() as u64) {
        return false;
    }
    let mut current = SecretBytes::zeroed(value.len());
    let mut done = 0;
    while done < current.len() {
        match rustix::io::pread(fd, &mut current.as_mut_bytes()[done..], done as u64) {
            Ok(0) | Err(_) => return false,
            Ok(n) => done += n,
        }
    }
    current.ct_eq(value.expose())
}

/// Overwrites the whole file behind `fd` with zeros (best effort: a wipe
/// must still unlink when this fails).
pub(super) fn zero_fd(fd: impl AsFd) {
    static ZEROS: [u8; 4096] = [0; 4096];
    let Ok(st) = rfs::fstat(&fd) else { return };
    let len = u64::try_from(st.st_size).unwrap_or(0);
    let mut off = 0u64;
    while off < len {
        let chunk = (len - off).min(ZEROS.len() as u64) as usize;
        match rustix::io::pwrite(&fd, &ZEROS[..chunk], off) {
            Ok(0) | Err(_) => return,
            Ok(n) => off += n as u64,
        }
    }
    let _ = rfs::fsync(&fd);
}

/// Zeroes a regular file at `name` that this process did not keep open.
/// A 0400 file is not writable even by its owner, so: open it read-only
/// without following symlinks (a FIFO would not block: `O_NONBLOCK`), make
/// that very inode writable with `fchmod` (acts on the inode, not the name),
/// then reopen for writing and check the name still leads to the same inode
/// before writing. Files with other hard links are left alone: zeroing
/// them would reach a file outside the secret's name. Best effort.
pub(super) fn zero_by_name<P: rustix::path::Arg + Copy>(dir: &OwnedFd, name: P) {
    let base = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let Ok(rd) = rfs::openat(dir, name, base | OFlags::RDONLY, Mode::empty()) else { return };
    let Ok(st) = rfs::fstat(&rd) else { return };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
        return;
    }
    if rfs::fchmod(&rd, Mode::from_raw_mode(0o600)).is_err() {
        return;
    }
    let Ok(wr) = rfs::openat(dir, name, base | OFlags::WRONLY, Mode::empty()) else { return };
    if rfs::fstat(&wr).is_ok_and(|w| Stamp::of(&w).same_inode(&Stamp::of(&st))) {
        zero_fd(&wr);
    }
}
