//! Small helpers: async from sync tests, random values and names, files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)
}

/// `n` random bytes, printable (`[A-Za-z0-9]`) so they are easy to grep for.
pub fn random_text(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::alphanumeric() as u8).collect()
}

/// `n` random bytes of any value (binary-safety checks).
pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, lowercase alphanumeric (what
/// docker-compose 1.29 keeps of a project name).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}{}", std::process::id(), fastrand::u32(..) % 1000)
}

/// Writes `bytes` to a new 0600 file.
pub fn write_private(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).expect("write");
}

/// The mode bits of a path on the host.
pub fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode()
        & 0o7777
}
