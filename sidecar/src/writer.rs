//! The safe tmpfs writer.
//!
//! The secrets directory is shared with the app container, which may be
//! hostile: it can plant symlinks, FIFOs or directories at any name. So the
//! directory is opened once and every operation is relative to that fd,
//! never follows a symlink, and files are created fresh (`O_EXCL`) under a
//! temporary name with their final mode, then `rename`d into place — rename
//! replaces whatever sits at the final name instead of following it.
//!
//! Each file written keeps its descriptor open (`O_RDWR`, granted at
//! creation whatever the mode): that is how a 0400 file, or one given to
//! another owner, can still be compared and zeroed later without
//! `CAP_DAC_OVERRIDE`, and without reopening a name the app may have swapped.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;
use seg_common::file_name::FileName;
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

mod fd_io;

use fd_io::{same_bytes, write_all, zero_by_name, zero_fd};

pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// Prefix of temporary files. Secret names cannot start with a dot, so no
/// secret can collide with one.
pub const TEMP_PREFIX: &str = ".seg-tmp-";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot open the secrets directory {dir}: {cause}; create it (a tmpfs volume shared with the app) or fix --dir")]
    OpenDir { dir: String, cause: io::Error },
    #[error("the secrets directory {dir} is on {fs} (statfs type {magic:#x}), not tmpfs: secrets would reach persistent storage. Mount a tmpfs there (compose: a volume with driver_opts type=tmpfs) or pass --allow-non-tmpfs")]
    NotTmpfs { dir: String, fs: &'static str, magic: u64 },
    #[error("cannot give files in {dir} to {owner}: {cause}. Run the sidecar as that user (compose: user: \"{owner}\") or grant it CAP_CHOWN (cap_add: [CHOWN])")]
    Chown { dir: String, owner: String, cause: io::Error },
    #[error("cannot {op} {path}: {cause}")]
    Io { op: &'static str, path: String, cause: io::Error },
}

/// What `store` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    Unchanged,
}

/// Where secret values go. The renewal loop only sees this trait, so it can
/// be tested with a fake.
pub trait SecretSink: Send + 'static {
    /// Puts `value` on disk under `name`, unless the same bytes are already
    /// there in a file this sink wrote and nobody touched since.
    fn store(&mut self, name: &SecretName, version: u64, value: &SecretBytes) -> Result<Stored, WriteError>;
    /// Zeroes and removes the file at `name`. Returns whether there was one.
    fn wipe(&mut self, name: &SecretName) -> Result<bool, WriteError>;
    /// True when `name` is the very file this sink last wrote.
    fn is_on_disk(&self, name: &SecretName) -> bool;
    /// Names of the files this sink wrote and has not wiped.
    fn written(&self) -> Vec<SecretName>;
    /// Where `name` lives, for logs.
    fn describe(&self, name: &SecretName) -> String;
}

/// Who should own the files: `None` for "leave as created".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gid {
            Some(gid) => write!(f, "{}:{gid}", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirOptions {
    pub mode: u32,
    pub owner: Option<Owner>,
    pub allow_non_tmpfs: bool,
    /// Secrets written to a file of another name (`SEG_SECRETS=NAME:FILE`).
    pub files: BTreeMap<SecretName, FileName>,
}

/// Identity and change marker of a file: any write, chmod, chown or rename
/// of the inode moves its ctime, which nobody can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, u64),
}

impl Stamp {
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    fn of(st: &Stat) -> Stamp {
        Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as u64),
        }
    }

    fn same_inode(&self, other: &Stamp) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

struct OurFile {
    fd: OwnedFd,
    version: u64,
    stamp: Stamp,
}

/// A directory of secret files, normally a tmpfs shared with the app.
pub struct TmpfsDir {
    dir: OwnedFd,
    path: PathBuf,
    opts: DirOptions,
    files: BTreeMap<SecretName, OurFile>,
}

fn io_err(op: &'static str, path: impl std::fmt::Display) -> impl FnOnce(Errno) -> WriteError {
    move |e| WriteError::Io { op, path: path.to_string(), cause: e.into() }
}

impl TmpfsDir {
    /// Opens `path`, checks it is a tmpfs (unless allowed), removes stale
    /// temporary files and, when an owner is set, checks that files can be
    /// given to it — so misconfiguration fails at start, not at first write.
    pub fn open(path: &Path, opts: DirOptions) -> Result<TmpfsDir, WriteError> {
        let shown = path.display().to_string();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rfs::openat(rfs::CWD, path, flags, Mode::empty())
            .map_err(|e| WriteError::OpenDir { dir: shown.clone(), cause: e.into() })?;
        let magic = fs_magic(&dir).map_err(io_err("statfs", &shown))?;
        if magic != TMPFS_MAGIC {
            let err = WriteError::NotTmpfs { dir: shown.clone(), fs: fs_name(magic), magic };
            if !opts.allow_non_tmpfs {
                return Err(err);
            }
            tracing::warn!("{err} — continuing because non-tmpfs directories are allowed");
        }
        let mut me = TmpfsDir { dir, path: path.to_owned(), opts, files: BTreeMap::new() };
        me.remove_stale_temps()?;
        if let Some(owner) = me.opts.owner {
            me.probe_chown(owner)?;
        }
        Ok(me)
    }

    /// The file `name` is written to: its own name unless renamed.
    fn file<'n>(&'n self, name: &'n SecretName) -> &'n str {
        self.opts.files.get(name).map_or(name.as_str(), FileName::as_str)
    }

    fn shown(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// Temp files left by a sidecar that died mid-write hold (part of) a
    /// secret: zero and remove them.
    fn remove_stale_temps(&mut self) -> Result<(), WriteError> {
        let entries = rfs::Dir::read_from(&self.dir).map_err(io_err("list", self.path.display()))?;
        let mut stale = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", self.path.display()))?;
            if entry.file_name().to_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                stale.push(entry.file_name().to_owned());
            }
        }
        for name in stale {
            let shown = self.shown(&name.to_string_lossy());
            zero_by_name(&self.dir, name.as_c_str());
            // Not fatal: the app can plant anything here, and it must not be
            // able to keep the sidecar from starting.
            match rfs::unlinkat(&self.dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) => tracing::info!("removed stale temp file {shown}"),
                Err(Errno::NOENT) => {}
                Err(e) => tracing::warn!("cannot remove stale temp file {shown}: {e}"),
            }
        }
        Ok(())
    }

    fn probe_chown(&self, owner: Owner) -> Result<(), WriteError> {
        let (fd, tmp) = self.create_temp("chown-probe")?;
        let result = rfs::fchown(&fd, Some(rfs::Uid::from_raw(owner.uid)), owner.gid.map(rfs::Gid::from_raw));
        let _ = rfs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
        result.map_err(|e| WriteError::Chown {
            dir: self.path.display().to_string(),
            owner: owner.to_string(),
            cause: e.into(),
        })
    }

    /// Creates a fresh, empty temp file with the final mode. `O_EXCL` +
    /// `O_NOFOLLOW`: never opens something planted in advance.
    fn create_temp(&self, label: &str) -> Result<(OwnedFd, String), WriteError> {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR;
        let mut attempts = 0;
        loop {
            let tmp = format!("{TEMP_PREFIX}{label}-{:016x}", fastrand::u64(..));
            match rfs::openat(&self.dir, tmp.as_str(), flags, Mode::from_raw_mode(self.opts.mode)) {
                Ok(fd) => return Ok((fd, tmp)),
                Err(Errno::EXIST) if attempts < 8 => attempts += 1,
                Err(e) => return Err(io_err("create a temp file in", self.path.display())(e)),
            }
        }
    }

    /// True when the name still leads to our inode, untouched since.
    fn untouched(&self, name: &SecretName, ours: &OurFile) -> bool {
        let at_name = rfs::statat(&self.dir, self.file(name), AtFlags::SYMLINK_NOFOLLOW);
        at_name.is_ok_and(|st| Stamp::of(&st) == ours.stamp)
    }

    fn write_new(&mut self, name: &SecretName, version: u64, value: &SecretBytes) -> Result<(), WriteError> {
        let (fd, tmp) = self.create_temp(self.file(name))?;
        if let Err(e) = self.fill_and_rename(&fd, &tmp, name, value) {
            zero_fd(&fd);
            let _ = rfs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        let stamp = Stamp::of(&rfs::fstat(&fd).map_err(io_err("stat", self.shown(self.file(name))))?);
        // The replaced file's descriptor closes here. Its bytes are not
        // zeroed: the app may still be reading the old value through an open
        // handle, and rename promised it a complete file.
        self.files.insert(name.clone(), OurFile { fd, version, stamp });
        Ok(())
    }

    fn fill_and_rename(
        &self,
        fd: &OwnedFd,
        tmp: &str,
        name: &SecretName,
        value: &SecretBytes,
    ) -> Result<(), WriteError> {
        let shown_tmp = self.shown(tmp);
        // The umask may have narrowed the creation mode; set it exactly.
        rfs::fchmod(fd, Mode::from_raw_mode(self.opts.mode)).map_err(io_err("chmod", &shown_tmp))?;
        if let Some(owner) = self.opts.owner {
            rfs::fchown(fd, Some(rfs::Uid::from_raw(owner.uid)), owner.gid.map(rfs::Gid::from_raw)).map_err(
                |e| WriteError::Chown {
                    dir: self.path.display().to_string(),
                    owner: owner.to_string(),
                    cause: e.into(),
                },
            )?;
        }
        write_all(fd, value.expose()).map_err(io_err("write", &shown_tmp))?;
        rfs::fsync(fd).map_err(io_err("fsync", &shown_tmp))?;
        rfs::renameat(&self.dir, tmp, &self.dir, self.file(name))
            .map_err(io_err("rename into place", self.shown(self.file(name))))
    }
}

impl SecretSink for TmpfsDir {
    fn store(&mut self, name: &SecretName, version: u64, value: &SecretBytes) -> Result<Stored, WriteError> {
        if let Some(ours) = self.files.get(name) {
            if self.untouched(name, ours) && (ours.version == version || same_bytes(&ours.fd, value)) {
                if let Some(ours) = self.files.get_mut(name) {
                    ours.version = version;
                }
                return Ok(Stored::Unchanged);
            }
        }
        self.write_new(name, version, value)?;
        Ok(Stored::Written)
    }

    fn wipe(&mut self, name: &SecretName) -> Result<bool, WriteError> {
        let ours = self.files.remove(name);
        if let Some(ours) = &ours {
            zero_fd(&ours.fd);
        }
        let at_name = match rfs::statat(&self.dir, self.file(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(ours.is_some()),
            Err(e) => return Err(io_err("stat", self.shown(self.file(name)))(e)),
        };
        let is_ours = ours.as_ref().is_some_and(|o| o.stamp.same_inode(&Stamp::of(&at_name)));
        if !is_ours {
            // Not the file we wrote (e.g. left by an earlier run): zero it
            // too if it is a plain file we can safely reach.
            zero_by_name(&self.dir, self.file(name));
        }
        match rfs::unlinkat(&self.dir, self.file(name), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(true),
            Err(e) => Err(io_err("remove", self.shown(self.file(name)))(e)),
        }
    }

    fn is_on_disk(&self, name: &SecretName) -> bool {
        let Some(ours) = self.files.get(name) else { return false };
        rfs::statat(&self.dir, self.file(name), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| ours.stamp.same_inode(&Stamp::of(&st)))
    }

    fn written(&self) -> Vec<SecretName> {
        self.files.keys().cloned().collect()
    }

    fn describe(&self, name: &SecretName) -> String {
        self.shown(self.file(name))
    }
}

#[allow(clippy::unnecessary_cast)] // FsWord is i64 or u32 depending on the target
fn fs_magic(dir: &OwnedFd) -> Result<u64, Errno> {
    let raw = rfs::fstatfs(dir)?.f_type as u64;
    Ok(raw & 0xffff_ffff)
}

fn fs_name(magic: u64) -> &'static str {
    match magic {
        0xef53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlayfs",
        0x8584_58f6 => "ramfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x0102_1994 => "tmpfs",
        _ => "a non-tmpfs filesystem",
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
