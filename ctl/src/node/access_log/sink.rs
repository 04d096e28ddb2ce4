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
#[path = "sink_tests.rs"]
mod tests;
