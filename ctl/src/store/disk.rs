//! File-system helpers of the embedded store: private directories, the
//! state-directory lock, atomic replacement and temp-file cleanup.
//!
//! Atomic replacement is the usual recipe: write a temp file in the same
//! directory (created exclusively, mode 0600), fsync it, rename it over the
//! target, fsync the directory. A crash leaves the old file or the new one;
//! what it can leave besides is a temp file, which [`clean_temp_files`]
//! removes on the next start.

use super::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Temp files are `.<target>.<random>.tmp`: secret names cannot start with a
/// dot, so a temp file can never be mistaken for a secret.
const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |cause| StoreError::Io { action, path: path.to_path_buf(), cause }
}

/// Creates `dir` (mode 0700) if missing. Refuses a directory that group or
/// others may write to, since they could swap files under us.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating directory", dir))?;
    let meta = fs::metadata(dir).map_err(io_err("inspecting directory", dir))?;
    if !meta.is_dir() {
        let why = io::Error::other("it is not a directory; move it away or pick another --state-dir");
        return Err(io_err("using state directory", dir)(why));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        let why = io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("mode {mode:04o} lets group or others write to it; run `chmod 700 {}`", dir.display()),
        );
        return Err(io_err("using state directory", dir)(why));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:04o}"), "directory is readable by others; 0700 is expected");
    }
    Ok(())
}

/// Takes an exclusive `flock` on `dir`, held as long as the returned handle
/// lives: two controllers on one state directory would each trust their own
/// cache and overwrite each other's versions.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let handle = File::open(dir).map_err(io_err("opening state directory", dir))?;
    match rustix::fs::flock(&handle, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(handle),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(io_err("locking state directory", dir)(io::Error::new(
            io::ErrorKind::WouldBlock,
            "another segctl node (or store) already uses it; stop that one first",
        ))),
        Err(e) => Err(io_err("locking state directory", dir)(e.into())),
    }
}

/// Flushes the directory entry changes (creations, renames, removals) of
/// `dir` to disk.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// Removes the leftovers of interrupted writes to files named
/// `<prefix>…` in `dir`; returns how many.
pub(super) fn clean_temp_files(dir: &Path, prefix: &str) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_err("listing directory", dir))? {
        let entry = entry.map_err(io_err("listing directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.strip_prefix('.').is_some_and(|n| n.starts_with(prefix));
        if ours && name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("removing stale temp file", &path))?;
            tracing::info!(file = %path.display(), "removed the temp file of an interrupted write");
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// A fresh temp path next to `file_name` in `dir`.
pub(super) fn temp_path(dir: &Path, file_name: &str) -> std::path::PathBuf {
    dir.join(format!(".{file_name}.{:016x}{TEMP_SUFFIX}", fastrand::u64(..)))
}

/// Creates `path` exclusively with mode 0600 (never following a symlink),
/// writes `bytes` and fsyncs. On failure the partial file is removed.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("creating", path))?;
    #[cfg(test)]
    if crash::should_crash(crash::Point::MidWrite) {
        let _ = file.write_all(&bytes[..bytes.len() / 2]);
        return Err(crash::simulated(path));
    }
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(io_err("writing", path)(e));
    }
    Ok(())
}

/// Replaces `dir/file_name` with `bytes` atomically: when this returns
/// `Ok` every reader sees the new file. It is durable once [`fsync_dir`]
/// has returned too; the caller does that after publishing the change, so
/// that a failing directory sync cannot leave the caller's view behind the
/// file system's.
pub(crate) fn replace(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = temp_path(dir, file_name);
    let target = dir.join(file_name);
    write_new(&tmp, bytes)?;
    #[cfg(test)]
    if crash::should_crash(crash::Point::BeforeRename) {
        return Err(crash::simulated(&tmp));
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("replacing", &target)(e));
    }
    Ok(())
}

/// Removes `dir/file_name`; a file already gone is fine. Durable once
/// [`fsync_dir`] has returned.
pub(crate) fn remove(dir: &Path, file_name: &str) -> Result<(), StoreError> {
    let path = dir.join(file_name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &path)(e)),
    }
}

/// Reads a regular file of at most `limit` bytes, not following symlinks.
/// Returns the bytes with the file's metadata.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<(Vec<u8>, fs::Metadata), StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("opening", path))?;
    let meta = file.metadata().map_err(io_err("inspecting", path))?;
    if !meta.is_file() || meta.len() > limit {
        let reason = format!("it is not a regular file of at most {limit} bytes; move it out of the way");
        return Err(StoreError::Corrupt { path: path.to_path_buf(), reason });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(io_err("reading", path))?;
    Ok((bytes, meta))
}

/// Refuses a file that group or others may access, or that another user
/// owns; used for the master key.
pub(crate) fn check_private_file(path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    let mode = meta.mode() & 0o777;
    let why = if mode & 0o077 != 0 {
        format!("mode {mode:04o} gives group or others access; run `chmod 600 {}`", path.display())
    } else if meta.uid() != rustix::process::geteuid().as_raw() {
        format!("it is owned by uid {}, not by this process; run `chown root {}`", meta.uid(), path.display())
    } else {
        return Ok(());
    };
    Err(io_err("refusing to use", path)(io::Error::new(io::ErrorKind::PermissionDenied, why)))
}

/// Test-only crash injection: the next write on this thread stops at the
/// chosen point, leaving whatever a killed process would leave.
#[cfg(test)]
pub(super) mod crash {
    use std::cell::Cell;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Point {
        MidWrite,
        BeforeRename,
    }

    thread_local! {
        static ARMED: Cell<Option<Point>> = const { Cell::new(None) };
    }

    pub fn arm(point: Point) {
        ARMED.with(|a| a.set(Some(point)));
    }

    pub(super) fn should_crash(here: Point) -> bool {
        ARMED.with(|a| {
            let hit = a.get() == Some(here);
            if hit {
                a.set(None);
            }
            hit
        })
    }

    pub(super) fn simulated(path: &std::path::Path) -> super::StoreError {
        super::io_err("simulated crash at", path)(std::io::Error::other("test crash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "a.json", b"one").unwrap();
        replace(dir.path(), "a.json", b"two").unwrap();
        fsync_dir(dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mode = fs::metadata(dir.path().join("a.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn crash_before_rename_keeps_old_file_and_cleanup_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "a.json", b"old").unwrap();
        crash::arm(crash::Point::BeforeRename);
        assert!(replace(dir.path(), "a.json", b"new").is_err());
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"old");
        std::fs::write(dir.path().join(".other.tmp"), b"not ours").unwrap();
        assert_eq!(clean_temp_files(dir.path(), "a.json.").unwrap(), 1);
        assert_eq!(clean_temp_files(dir.path(), "").unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn world_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
    }

    #[test]
    fn second_lock_on_a_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already uses it"), "{err}");
    }
}
