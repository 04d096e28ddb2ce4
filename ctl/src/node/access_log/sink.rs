//! The access-log file: appends, size-based rotation and reopening.
//!
//! Every operation runs under the access log's one mutex, so a rotation is
//! atomic with respect to concurrent writers: each line goes whole into
//! exactly one file, and none is written while the files are being shifted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// When the file is rotated: `max_size` 0 never rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A line that would take the file past this many bytes goes into a new file.
    pub max_size: u64,
    /// Rotated files kept (`access.log.1` … `access.log.N`); 0 keeps none.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation { max_size: 64 << 20, keep: 5 }
    }
}

pub struct Sink {
    path: PathBuf,
    file: File,
    /// Bytes in the current file, as far as we wrote them.
    size: u64,
    rotation: Rotation,
    /// Lines lost since writing started failing (reported once, on the first).
    lost: Option<u64>,
    /// A rotation failed and was reported; reported again only after one worked.
    rotate_failing: bool,
}

impl Sink {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Sink> {
        let file = open_file(path)?;
        let size = file.metadata()?.len();
        Ok(Sink { path: path.to_owned(), file, size, rotation, lost: None, rotate_failing: false })
    }

    /// Appends one whole line (one `write`), rotating first if it would not fit.
    /// Failures go to tracing once, not once per line.
    pub fn write_line(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        let max = self.rotation.max_size;
        if max > 0 && self.size > 0 && self.size.saturating_add(len) > max {
            self.rotate_reporting();
        }
        match self.file.write_all(line) {
            Ok(()) => {
                self.size += len;
                if let Some(lost) = self.lost.take() {
                    tracing::warn!(
                        "the access log {} is writable again; {lost} line(s) could not be written",
                        self.path.display()
                    );
                }
            }
            Err(err) => match &mut self.lost {
                Some(lost) => *lost += 1,
                None => {
                    tracing::error!(
                        "cannot append to the access log {}: {err}; requests are still served, \
                         and lines are dropped (not reported again) until writing works",
                        self.path.display()
                    );
                    self.lost = Some(1);
                }
            },
        }
    }

    fn rotate_reporting(&mut self) {
        match self.rotate() {
            Ok(()) => self.rotate_failing = false,
            Err(err) if !self.rotate_failing => {
                self.rotate_failing = true;
                tracing::error!(
                    "cannot rotate the access log {}: {err}; it keeps growing past {} bytes \
                     until rotation works (not reported again)",
                    self.path.display(),
                    self.rotation.max_size
                );
            }
            Err(_) => {}
        }
    }

    /// `path.{keep-1}` → `path.{keep}` … `path` → `path.1`, then a new `path`.
    /// If the new file cannot be opened we keep writing to the old one
    /// (now `path.1`): nothing is lost.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.keep;
        for i in (1..keep).rev() {
            match fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if keep > 0 {
            fs::rename(&self.path, numbered(&self.path, 1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = open_file(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Opens the file at the path again (after logrotate moved it away).
    /// On failure the old file stays in use.
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_file(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `access.log` → `access.log.N`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Appending, created 0600, never through a symlink.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    //! Rotation, keep, reopen and the file mode, on real files.

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup(max_size: u64, keep: u32) -> (tempfile::TempDir, PathBuf, Sink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let sink = Sink::open(&path, Rotation { max_size, keep }).unwrap();
        (dir, path, sink)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn rotates_before_a_line_that_would_not_fit() {
        let (_dir, path, mut sink) = setup(10, 3);
        sink.write_line(b"aaaa\n");
        sink.write_line(b"bbbb\n"); // exactly 10: fits
        sink.write_line(b"cccc\n"); // would make 15: rotates first
        assert_eq!(read(&numbered(&path, 1)), "aaaa\nbbbb\n");
        assert_eq!(read(&path), "cccc\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&numbered(&path, 1)), 0o600);
    }

    #[test]
    fn older_files_shift_and_those_beyond_keep_are_dropped() {
        let (_dir, path, mut sink) = setup(5, 2);
        for l in ["1111\n", "2222\n", "3333\n", "4444\n"] {
            sink.write_line(l.as_bytes());
        }
        assert_eq!(read(&path), "4444\n");
        assert_eq!(read(&numbered(&path, 1)), "3333\n");
        assert_eq!(read(&numbered(&path, 2)), "2222\n");
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn keep_zero_discards_and_size_zero_never_rotates() {
        let (_dir, path, mut sink) = setup(5, 0);
        sink.write_line(b"1111\n");
        sink.write_line(b"2222\n");
        assert_eq!(read(&path), "2222\n");
        assert!(!numbered(&path, 1).exists());
        let (_dir, path, mut sink) = setup(0, 5);
        for _ in 0..1_000 {
            sink.write_line(b"0123456789\n");
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 11_000);
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
        let (_dir, path, mut sink) = setup(4, 5);
        sink.write_line(b"0123456789\n");
        sink.write_line(b"abcdefghij\n");
        assert_eq!(read(&numbered(&path, 1)), "0123456789\n");
        assert_eq!(read(&path), "abcdefghij\n");
    }

    #[test]
    fn the_size_of_an_existing_file_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        fs::write(&path, "old-line\n").unwrap();
        let mut sink = Sink::open(&path, Rotation { max_size: 12, keep: 1 }).unwrap();
        sink.write_line(b"new\n");
        assert_eq!(read(&numbered(&path, 1)), "old-line\n");
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn reopen_starts_a_new_file_at_the_path() {
        let (dir, path, mut sink) = setup(0, 5);
        sink.write_line(b"before\n");
        let moved = dir.path().join("access.log-20240101");
        fs::rename(&path, &moved).unwrap();
        sink.write_line(b"still old\n");
        sink.reopen().unwrap();
        sink.write_line(b"after\n");
        assert_eq!(read(&moved), "before\nstill old\n");
        assert_eq!(read(&path), "after\n");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_symlink_at_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(Sink::open(&path, Rotation::default()).is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn write_failures_do_not_panic_and_recover() {
        let (_dir, path, mut sink) = setup(0, 5);
        // A read-only descriptor in place of the file: every write fails.
        let good = std::mem::replace(&mut sink.file, File::open(&path).unwrap());
        sink.write_line(b"lost-1\n");
        sink.write_line(b"lost-2\n");
        assert_eq!(sink.lost, Some(2));
        sink.file = good;
        sink.write_line(b"kept\n");
        assert_eq!(sink.lost, None);
        assert_eq!(read(&path), "kept\n");
    }
}
