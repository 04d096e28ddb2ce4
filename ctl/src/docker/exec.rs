//! Running a command inside a running container (Docker's exec API) with
//! bytes on its stdin: how an exec hook reaches a service. The bytes travel
//! only on the attached stdin stream — never in the exec's argv or
//! environment, which `docker inspect` of the exec and the process's
//! `/proc/PID/cmdline` and `environ` would show.
//!
//! Docker has no API to stop an exec. At the timeout we read the exec's
//! host PID (`GET /exec/{id}/json`), open a pidfd for it, check that the
//! exec is still running with that PID (so a reused PID is never hit), and
//! send `SIGKILL` through the pidfd. Processes it started are not killed
//! unless they die with it.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Output kept from each of stdout and stderr.
const KEEP_OUTPUT: usize = 2048;

/// One command to run in one container.
pub struct ExecRun<'a> {
    pub container: &'a str,
    pub argv: &'a [String],
    pub user: Option<&'a str>,
    /// `NAME=value` pairs (names and versions only, never a secret).
    pub env: &'a [String],
    pub stdin: &'a [u8],
    pub timeout: Duration,
}

/// How it ended: its exit code and the tails of its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why an exec did not run to its end; quoted in error messages, so no
/// variant is a `source`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    #[error("the container is gone or not running: {0}")]
    NotRunning(String),
    #[error("Docker refused the exec: {0}")]
    Refused(String),
    #[error("timed out after {after}; {killed}")]
    TimedOut { after: String, killed: String },
}

/// Runs `run` to its end (or its timeout).
pub async fn exec(docker: &Docker, run: ExecRun<'_>) -> Result<ExecOutput, ExecError> {
    let config = CreateExecOptions::<String> {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        cmd: Some(run.argv.to_vec()),
        env: Some(run.env.to_vec()),
        user: run.user.map(str::to_owned),
        ..Default::default()
    };
    let id = docker.create_exec(run.container, config).await.map_err(refused)?.id;
    let talk = talk(docker, &id, run.stdin);
    match tokio::time::timeout(run.timeout, talk).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let after = humantime::format_duration(run.timeout).to_string();
            Err(ExecError::TimedOut { after, killed: kill(docker, &id).await })
        }
    }
}

/// Starts the exec, feeds stdin (then closes it), and reads its output
/// until it ends; then asks Docker for its exit code.
async fn talk(docker: &Docker, id: &str, stdin: &[u8]) -> Result<ExecOutput, ExecError> {
    let start = StartExecOptions { detach: false, tty: false, output_capacity: None };
    let StartExecResults::Attached { mut output, mut input } =
        docker.start_exec(id, Some(start)).await.map_err(refused)?
    else {
        return Err(ExecError::Refused("Docker started the exec detached".into()));
    };
    let feed = async move {
        // A command that does not read its stdin closes it: fine.
        let _ = input.write_all(stdin).await;
        let _ = input.shutdown().await;
    };
    let read = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(item) = output.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdErr { message }) => keep(&mut err, &message),
                Ok(log) => keep(&mut out, &log.into_bytes()),
                Err(e) => return Err(refused(e)),
            }
        }
        Ok((out, err))
    };
    let ((), read) = tokio::join!(feed, read);
    let (stdout, stderr) = read?;
    Ok(ExecOutput { exit_code: exit_code(docker, id).await?, stdout, stderr })
}

/// The exit code once Docker has noted it (the output can end a moment
/// before the exec is marked finished).
async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>, ExecError> {
    for _ in 0..50 {
        let inspect = docker.inspect_exec(id).await.map_err(refused)?;
        if inspect.running != Some(true) {
            return Ok(inspect.exit_code);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

fn keep(kept: &mut Vec<u8>, more: &[u8]) {
    kept.extend_from_slice(more);
    if kept.len() > KEEP_OUTPUT {
        kept.drain(..kept.len() - KEEP_OUTPUT);
    }
}

fn refused(e: bollard::errors::Error) -> ExecError {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, message } => {
            ExecError::NotRunning(message)
        }
        bollard::errors::Error::DockerResponseServerError { message, .. } => ExecError::Refused(message),
        other => ExecError::Refused(other.to_string()),
    }
}

/// Kills a timed-out exec's process (see the module docs); says what happened.
async fn kill(docker: &Docker, id: &str) -> String {
    let Ok(before) = docker.inspect_exec(id).await else { return "Docker could not say its PID".into() };
    let pid = before.pid.and_then(|p| rustix::process::Pid::from_raw(p as i32));
    let (Some(pid), Some(true)) = (pid, before.running) else { return "it had ended".into() };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return "it had ended".into();
    };
    // Still the same exec with the same PID, now that the pidfd pins it.
    match docker.inspect_exec(id).await {
        Ok(now) if now.running == Some(true) && now.pid == before.pid => {}
        _ => return "it had ended".into(),
    }
    match rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
        Ok(()) => format!("its process (host PID {}) was killed", pid.as_raw_nonzero()),
        Err(e) => format!("killing its process failed: {e}"),
    }
}
