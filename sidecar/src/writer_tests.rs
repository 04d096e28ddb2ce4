use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn shm_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("seg-writer-").tempdir_in("/dev/shm").unwrap();
    let dir = rfs::openat(rfs::CWD, d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    assert_eq!(fs_magic(&dir).unwrap(), TMPFS_MAGIC, "/dev/shm must be a tmpfs for these tests");
    d
}

fn opts() -> DirOptions {
    DirOptions { mode: 0o400, owner: None, allow_non_tmpfs: false, files: Default::default() }
}

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn secret(b: &[u8]) -> SecretBytes {
    SecretBytes::from_slice(b)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn atomic_write_creates_a_0400_file_with_the_bytes_and_no_leftovers() {
    let d = shm_dir();
    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    assert_eq!(w.store(&name("db-password"), 1, &secret(b"hunter2")).unwrap(), Stored::Written);
    let path = d.path().join("db-password");
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
    assert_eq!(fs::read(&path).unwrap(), b"hunter2");
    assert_eq!(entries(d.path()), ["db-password"]);
    assert!(w.is_on_disk(&name("db-password")));
    assert_eq!(w.written(), [name("db-password")]);
}

#[test]
fn the_configured_mode_is_exact() {
    let d = shm_dir();
    let mut w = TmpfsDir::open(d.path(), DirOptions { mode: 0o440, ..opts() }).unwrap();
    w.store(&name("k"), 1, &secret(b"v")).unwrap();
    assert_eq!(fs::metadata(d.path().join("k")).unwrap().permissions().mode() & 0o7777, 0o440);
}

#[test]
fn a_planted_symlink_is_replaced_not_followed() {
    let d = shm_dir();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    std::os::unix::fs::symlink(&victim, d.path().join("db")).unwrap();

    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    w.store(&name("db"), 1, &secret(b"secret")).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    let meta = fs::symlink_metadata(d.path().join("db")).unwrap();
    assert!(meta.file_type().is_file(), "the name is still a symlink");
    assert_eq!(fs::read(d.path().join("db")).unwrap(), b"secret");

    // Wiping a planted symlink removes the link and leaves its target alone.
    std::os::unix::fs::symlink(&victim, d.path().join("other")).unwrap();
    assert!(w.wipe(&name("other")).unwrap());
    assert!(fs::symlink_metadata(d.path().join("other")).is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"original");
}

#[test]
fn an_unchanged_value_is_not_rewritten() {
    let d = shm_dir();
    let path = d.path().join("db");
    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    w.store(&name("db"), 1, &secret(b"same")).unwrap();
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Same version: no write at all.
    assert_eq!(w.store(&name("db"), 1, &secret(b"same")).unwrap(), Stored::Unchanged);
    // New version, same bytes (compared through our own descriptor).
    assert_eq!(w.store(&name("db"), 2, &secret(b"same")).unwrap(), Stored::Unchanged);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec(), before.ctime_nsec()),
        (after.ino(), after.mtime_nsec(), after.ctime_nsec())
    );

    // New bytes: a new inode replaces the old one.
    assert_eq!(w.store(&name("db"), 3, &secret(b"new!")).unwrap(), Stored::Written);
    assert_ne!(fs::metadata(&path).unwrap().ino(), before.ino());
    assert_eq!(fs::read(&path).unwrap(), b"new!");
}

#[test]
fn a_tampered_or_deleted_file_is_restored() {
    let d = shm_dir();
    let path = d.path().join("db");
    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    w.store(&name("db"), 1, &secret(b"v1")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(w.store(&name("db"), 1, &secret(b"v1")).unwrap(), Stored::Written);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o400);

    fs::remove_file(&path).unwrap();
    assert!(!w.is_on_disk(&name("db")));
    assert_eq!(w.store(&name("db"), 1, &secret(b"v1")).unwrap(), Stored::Written);
    assert!(w.is_on_disk(&name("db")));
}

#[test]
fn wipe_zeroes_the_bytes_then_removes_the_name() {
    let d = shm_dir();
    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    w.store(&name("db"), 1, &secret(b"hunter2")).unwrap();
    // The app still holds the file open: after the wipe it must read zeros.
    let app = fs::File::open(d.path().join("db")).unwrap();
    assert!(w.wipe(&name("db")).unwrap());
    assert!(entries(d.path()).is_empty());
    assert_eq!(std::io::read_to_string(&app).unwrap().as_bytes(), [0u8; 7]);
    assert!(w.written().is_empty());
    assert!(!w.wipe(&name("db")).unwrap(), "a second wipe finds nothing");
}

#[test]
fn wipe_also_zeroes_a_file_left_by_an_earlier_run() {
    let d = shm_dir();
    TmpfsDir::open(d.path(), opts()).unwrap().store(&name("db"), 1, &secret(b"old")).unwrap();
    let app = fs::File::open(d.path().join("db")).unwrap();
    let mut w = TmpfsDir::open(d.path(), opts()).unwrap();
    assert!(w.wipe(&name("db")).unwrap());
    assert!(entries(d.path()).is_empty());
    assert_eq!(std::io::read_to_string(&app).unwrap().as_bytes(), [0u8; 3]);
}

#[test]
fn hostile_names_are_refused_by_the_name_type() {
    for bad in ["a/b", "..", ".", "../etc/passwd", ".seg-tmp-db-1", "/abs"] {
        assert!(SecretName::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn stale_temp_files_are_removed_on_open() {
    let d = shm_dir();
    fs::write(d.path().join(".seg-tmp-db-00ff"), b"partial").unwrap();
    fs::create_dir(d.path().join(".seg-tmp-planted-dir")).unwrap();
    fs::write(d.path().join("keep"), b"x").unwrap();
    TmpfsDir::open(d.path(), opts()).unwrap();
    assert_eq!(entries(d.path()), [".seg-tmp-planted-dir", "keep"]);
}

#[test]
fn files_are_given_to_the_configured_owner() {
    // The tests run as root (CAP_CHOWN); the refusal without it is covered by
    // the integration test that runs the binary as nobody.
    let d = shm_dir();
    let owner = Owner { uid: 1234, gid: Some(5678) };
    let mut w = TmpfsDir::open(d.path(), DirOptions { owner: Some(owner), ..opts() }).unwrap();
    assert!(entries(d.path()).is_empty(), "the chown probe left a file");
    w.store(&name("db"), 1, &secret(b"v")).unwrap();
    let meta = fs::metadata(d.path().join("db")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    // Still comparable and wipeable through the kept descriptor.
    assert_eq!(w.store(&name("db"), 2, &secret(b"v")).unwrap(), Stored::Unchanged);
    assert!(w.wipe(&name("db")).unwrap());
}

/// A directory that is certainly not tmpfs: /tmp may be one, the source tree
/// is not.
fn non_tmpfs_dir() -> tempfile::TempDir {
    let candidates = [std::env::temp_dir(), "/var/tmp".into(), env!("CARGO_MANIFEST_DIR").into()];
    for base in candidates {
        let Ok(d) = tempfile::Builder::new().prefix(".seg-writer-").tempdir_in(&base) else { continue };
        let fd = rfs::openat(rfs::CWD, d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        if fs_magic(&fd).unwrap() != TMPFS_MAGIC {
            return d;
        }
    }
    panic!("no non-tmpfs directory found for the test");
}

#[test]
fn a_non_tmpfs_directory_is_refused_unless_allowed() {
    let d = non_tmpfs_dir();
    let err = TmpfsDir::open(d.path(), opts()).err().expect("non-tmpfs accepted");
    let msg = err.to_string();
    assert!(matches!(err, WriteError::NotTmpfs { .. }), "{msg}");
    assert!(msg.contains(&d.path().display().to_string()) && msg.contains("statfs type 0x"), "{msg}");
    assert!(msg.contains("--allow-non-tmpfs"), "{msg}");
    TmpfsDir::open(d.path(), DirOptions { allow_non_tmpfs: true, ..opts() }).unwrap();
}

#[test]
fn a_missing_or_symlinked_directory_is_refused() {
    let d = shm_dir();
    let err = TmpfsDir::open(&d.path().join("nope"), opts()).err().unwrap();
    assert!(matches!(err, WriteError::OpenDir { .. }), "{err}");
    std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
    assert!(TmpfsDir::open(&d.path().join("link"), opts()).is_err());
}

#[test]
fn a_missing_secrets_directory_is_said_once() {
    let d = shm_dir();
    let missing = d.path().join("absent");
    let Err(err) = TmpfsDir::open(&missing, opts()) else { panic!("opened {}", missing.display()) };
    // As `main` prints it: the error, then each `source`.
    assert_eq!(
        format!("{:#}", anyhow::Error::from(err)),
        format!(
            "cannot open the secrets directory {}: No such file or directory (os error 2); create it (a \
             tmpfs volume shared with the app) or fix --dir",
            missing.display()
        )
    );
}

/// `SEG_SECRETS=tls.key:server.key`: the secret is written to, and wiped
/// from, the file of the other name; its own name is never created.
#[test]
fn a_renamed_secret_lives_in_its_file() {
    let d = shm_dir();
    let files = [(name("tls.key"), seg_common::file_name::FileName::parse("server.key").unwrap())].into();
    let mut w = TmpfsDir::open(d.path(), DirOptions { files, ..opts() }).unwrap();
    w.store(&name("tls.key"), 1, &secret(b"k1")).unwrap();
    assert_eq!(entries(d.path()), ["server.key"]);
    assert_eq!(fs::read(d.path().join("server.key")).unwrap(), b"k1");
    assert!(w.is_on_disk(&name("tls.key")));
    w.store(&name("tls.key"), 2, &secret(b"k2")).unwrap();
    assert_eq!(fs::read(d.path().join("server.key")).unwrap(), b"k2");
    w.wipe(&name("tls.key")).unwrap();
    assert!(entries(d.path()).is_empty());
}
