//! Running a firewall tool: one process, its stdin fed from a string, its
//! failure reported with the tool's own words (stderr). A command prefix
//! lets tests aim a backend at a network namespace (`ip netns exec NS`).

use super::FirewallError;
use std::collections::VecDeque;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The processes this controller started lately, by PID. The kernel's
/// nftables change notifications name the process that committed each
/// transaction; one of ours needs no read-back (`segregation::clobber`).
static STARTED: Mutex<VecDeque<(u32, Instant)>> = Mutex::new(VecDeque::new());
/// How long a PID stays known as ours (its notifications arrive within
/// milliseconds; a PID is not reused that fast).
const KEPT: Duration = Duration::from_secs(10);

pub(super) fn note_started(pid: u32) {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    while started.front().is_some_and(|(_, at)| now.duration_since(*at) > KEPT) || started.len() >= 1024 {
        started.pop_front();
    }
    started.push_back((pid, now));
}

/// Whether `pid` is a firewall tool this process ran in the last few seconds.
pub fn started_by_us(pid: u32) -> bool {
    let started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    started.iter().any(|(p, at)| *p == pid && at.elapsed() <= KEPT)
}

/// Runs `prefix… program args…`; stdout on success.
pub(super) fn run(
    prefix: &[String],
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, FirewallError> {
    let mut words: Vec<String> = prefix.to_vec();
    words.push(program.to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    let command = words.join(" ");
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let spawn_err = |cause| FirewallError::Spawn { command: command.clone(), cause };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    note_started(child.id());
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A failed write shows up as the command's own failure below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(FirewallError::Failed { command, status: out.status.to_string(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
