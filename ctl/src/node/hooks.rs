//! Running hook commands on the host: `/bin/sh -c COMMAND` with a clean
//! environment (names and versions only), the input on stdin, a timeout
//! that kills the whole process group, and bounded output capture.
//!
//! A pre-rotate hook gets the new secret value on stdin — never in argv or
//! the environment. Its output is only ever reported when it does not
//! contain the value (a hook that echoes its input must not leak it into an
//! error message).

use seg_common::api::{HookRun, HookSpec};
use seg_common::secret::SecretBytes;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Output kept from each of stdout and stderr.
const KEEP_OUTPUT: usize = 2048;
/// Output shown in an error message.
const SHOW_OUTPUT: usize = 400;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a hook reads on stdin.
pub enum Input<'a> {
    /// The new value (pre-rotate).
    Secret(&'a SecretBytes),
    /// A JSON description of the event (post-rotate).
    Text(Vec<u8>),
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub run: HookRun,
    pub ok: bool,
    /// The tail of its output when it failed, unless withheld.
    pub output: String,
}

impl HookResult {
    fn failed(status: String, started: Instant) -> HookResult {
        let run = HookRun { status, duration_ms: started.elapsed().as_millis() as u64 };
        HookResult { run, ok: false, output: String::new() }
    }
}

/// Runs `spec` with `input` on stdin and `env` as its only variables
/// (besides `PATH`).
pub async fn run(spec: &HookSpec, input: Input<'_>, env: &[(&str, String)]) -> HookResult {
    let started = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookResult::failed(format!("could not start /bin/sh: {e}"), started),
    };
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut pipe) = stdin {
            let bytes: &[u8] = match &input {
                Input::Secret(v) => v.expose(),
                Input::Text(t) => t,
            };
            // A hook that does not read its input closes the pipe: fine.
            let _ = pipe.write_all(bytes).await;
        }
    };
    // Read concurrently (a chatty hook must not block on a full pipe), but
    // do not wait on pipes held open by something it left running.
    let out = tokio::spawn(capture(child.stdout.take()));
    let err = tokio::spawn(capture(child.stderr.take()));
    let timeout = Duration::from_millis(spec.timeout_ms);
    let waited = tokio::time::timeout(timeout, async { tokio::join!(feed, child.wait()).1 }).await;
    let status = match waited {
        Ok(status) => status,
        Err(_) => {
            kill_group(&child);
            let _ = child.wait().await;
            out.abort();
            err.abort();
            return HookResult::failed(format!("timed out after {}", show_ms(spec.timeout_ms)), started);
        }
    };
    let grab = |task: tokio::task::JoinHandle<Vec<u8>>| async move {
        let abort = task.abort_handle();
        let got = tokio::time::timeout(Duration::from_millis(200), task).await;
        abort.abort();
        got.ok().and_then(Result::ok).unwrap_or_default()
    };
    let (out, err) = (grab(out).await, grab(err).await);
    let run = HookRun { status: describe(&status), duration_ms: started.elapsed().as_millis() as u64 };
    let ok = status.as_ref().is_ok_and(|s| s.success());
    let output = if ok { String::new() } else { tail(if err.is_empty() { &out } else { &err }) };
    HookResult { run, ok, output }
}

fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended".into(),
        },
        Err(e) => format!("could not wait for it: {e}"),
    }
}

fn show_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Reads a pipe to its end, keeping the last [`KEEP_OUTPUT`] bytes.
async fn capture(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut pipe) = pipe else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > KEEP_OUTPUT {
                    kept.drain(..kept.len() - KEEP_OUTPUT);
                }
            }
        }
    }
}

pub(super) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(SHOW_OUTPUT);
    text.chars().skip(skip).collect()
}

/// `output`, unless it could give the value away: then a note instead.
/// Values shorter than 8 bytes are too easy to find by accident, so their
/// hooks' output is never shown.
pub fn redact(output: &str, value: &SecretBytes) -> String {
    let v = value.expose();
    let leaks = v.len() < 8 || output.as_bytes().windows(v.len()).any(|w| w == v);
    if output.is_empty() || !leaks {
        output.to_owned()
    } else {
        "(output withheld: it may contain the secret value)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str, timeout_ms: u64) -> HookSpec {
        HookSpec { command: cmd.into(), timeout_ms, exec: None }
    }

    #[tokio::test]
    async fn the_value_arrives_on_stdin_and_not_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let env_file = dir.path().join("env");
        let cmd = format!("cat > {}; env > {}", seen.display(), env_file.display());
        let value = SecretBytes::from_slice(b"s3cret-value");
        let out = run(&spec(&cmd, 5000), Input::Secret(&value), &[("SEG_SECRET_NAME", "db".into())]).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.run.status, "exit 0");
        assert_eq!(std::fs::read(&seen).unwrap(), b"s3cret-value");
        let env = std::fs::read_to_string(&env_file).unwrap();
        assert!(env.contains("SEG_SECRET_NAME=db") && !env.contains("s3cret"), "{env}");
    }

    #[tokio::test]
    async fn failures_report_the_exit_status_and_output() {
        let value = SecretBytes::from_slice(b"s3cret-value");
        let out = run(&spec("echo 'db is down' >&2; exit 3", 5000), Input::Secret(&value), &[]).await;
        assert!(!out.ok);
        assert_eq!((out.run.status.as_str(), out.output.as_str()), ("exit 3", "db is down"));
        let leak = run(&spec("cat; exit 1", 5000), Input::Secret(&value), &[]).await;
        assert_eq!(leak.output, "s3cret-value");
        assert!(redact(&leak.output, &value).contains("withheld"));
        assert_eq!(redact("db is down", &value), "db is down");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_its_children() {
        let started = Instant::now();
        let out = run(&spec("sleep 30 & sleep 30", 300), Input::Text(b"{}".to_vec()), &[]).await;
        assert!(!out.ok);
        assert_eq!(out.run.status, "timed out after 300ms");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
