//! `seg-attack`: what an attacker of the agent socket does, for the
//! end-to-end security tests. Plain std + nix, single-threaded, built
//! static so it runs in FROM-scratch containers.
//!
//! - `pass AGENT DROP [stay]` — connect to the agent socket, hand the
//!   connection to whoever listens on the unix socket DROP (`SCM_RIGHTS`),
//!   then exit (or, with `stay`, sleep until killed).
//! - `storm AGENT N SECONDS` — keep N connections open for SECONDS,
//!   reopening each one the controller closes; prints what happened.
//! - `fetch AGENT PATH N` — N sequential `GET PATH`s, one connection each
//!   (like a sidecar's fetch); prints ok/failed counts and p50/p99/max µs.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match arg(1) {
        "pass" => pass(arg(2), arg(3), args.get(4).is_some_and(|a| a == "stay")),
        "storm" => storm(arg(2), number(arg(3)), number(arg(4))),
        "fetch" => fetch(arg(2), arg(3), number(arg(4))),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: seg-attack pass AGENT DROP [stay] | storm AGENT N SECONDS | fetch AGENT PATH N");
    std::process::exit(2)
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| usage())
}

fn pass(agent: &str, drop: &str, stay: bool) {
    let conn = UnixStream::connect(agent).unwrap_or_else(|e| panic!("connect {agent}: {e}"));
    let courier = UnixStream::connect(drop).unwrap_or_else(|e| panic!("connect {drop}: {e}"));
    let fds = [conn.as_raw_fd()];
    let payload = [IoSlice::new(b"fd")];
    sendmsg::<()>(courier.as_raw_fd(), &payload, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .unwrap_or_else(|e| panic!("sendmsg: {e}"));
    println!("passed");
    std::io::stdout().flush().ok();
    if stay {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn storm(agent: &str, n: usize, seconds: usize) {
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let (mut opened, mut failed, mut closed) = (0u64, 0u64, 0u64);
    let mut conns: Vec<Option<UnixStream>> = (0..n).map(|_| None).collect();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        for slot in conns.iter_mut() {
            if let Some(c) = slot {
                // The controller closed it (or answered and will): reopen.
                match c.read(&mut buf) {
                    Ok(0) => {
                        closed += 1;
                        *slot = None;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(_) => {
                        closed += 1;
                        *slot = None;
                    }
                }
            }
            if slot.is_none() {
                match UnixStream::connect(agent) {
                    Ok(c) => {
                        c.set_nonblocking(true).ok();
                        opened += 1;
                        *slot = Some(c);
                    }
                    Err(_) => failed += 1,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("{{\"opened\":{opened},\"connect_failed\":{failed},\"closed_by_server\":{closed}}}");
}

fn fetch(agent: &str, path: &str, n: usize) {
    let mut took = Vec::with_capacity(n);
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        match get(agent, path) {
            Ok(status) if status.starts_with("HTTP/1.1 200") => took.push(started.elapsed().as_micros() as u64),
            Ok(status) => failures.push(status),
            Err(e) => failures.push(e.to_string()),
        }
    }
    took.sort_unstable();
    let at = |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1))).copied();
    let first = failures.first().map(|f| f.replace('"', "'")).unwrap_or_default();
    println!(
        "{{\"ok\":{},\"failed\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"first_failure\":\"{first}\"}}",
        took.len(),
        failures.len(),
        at(0.5).unwrap_or(0),
        at(0.99).unwrap_or(0),
        took.last().copied().unwrap_or(0),
    );
}

/// One request on a fresh connection; the status line of the answer.
fn get(agent: &str, path: &str) -> std::io::Result<String> {
    let mut c = UnixStream::connect(agent)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(c, "GET {path} HTTP/1.1\r\nhost: seg\r\nconnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("").to_owned())
}
