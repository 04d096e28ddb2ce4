//! Running a command to completion, bounded in time, with its output kept.

use crate::wait::poll;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// What a finished command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout and stderr together, for assertions on messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr)
    }

    /// Exit code, or 128+signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// Runs `cmd` to completion within `timeout` (killing it past that, and
/// panicking). stdout/stderr go through temp files, so no pipe can fill up.
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
    run_with_stdin(cmd, None, timeout)
}

pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    let mut out_file = tempfile::tempfile().expect("temp file");
    let mut err_file = tempfile::tempfile().expect("temp file");
    cmd.stdout(out_file.try_clone().expect("dup")).stderr(err_file.try_clone().expect("dup"));
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    // From a thread: a child that reads slowly must not block the deadline.
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let finished = poll(timeout, Duration::from_millis(10), || child.try_wait().expect("wait"));
    let Some(status) = finished else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{shown} did not finish within {timeout:?}");
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = read_all(&mut out_file);
    let stderr = String::from_utf8_lossy(&read_all(&mut err_file)).into_owned();
    Out { status, stdout, stderr }
}

fn read_all(f: &mut File) -> Vec<u8> {
    let mut buf = Vec::new();
    f.rewind().expect("rewind");
    f.read_to_end(&mut buf).expect("read output");
    buf
}
