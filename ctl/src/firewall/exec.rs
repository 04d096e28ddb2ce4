//! Running a firewall tool: one process, its stdin fed from a string, its
//! failure reported with the tool's own words (stderr). A command prefix
//! lets tests aim a backend at a network namespace (`ip netns exec NS`).

use super::FirewallError;
use std::io::Write;
use std::process::{Command, Stdio};

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
