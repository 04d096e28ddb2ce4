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
