//! `segctl status`: is the controller up, and what does it see. It exits
//! [`NOT_READY_EXIT`] while the controller says Docker is unreachable, so a
//! script can wait for readiness with `until segctl status; do sleep 1; done`
//! (`--exit-zero` just prints).

use super::{AdminOpts, Output};
use anyhow::Result;
use clap::Args;
use seg_common::api::{AgentSocketStatus, FirewallStatus, StatusReport};

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub admin: AdminOpts,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Exit 0 whenever the controller answered, even while it cannot reach
    /// Docker (by default that exits 3).
    #[arg(long)]
    pub exit_zero: bool,
}

/// The exit status while the controller answers but Docker is unreachable
/// (1 is any other error: the controller itself is unreachable; 2 is usage).
pub const NOT_READY_EXIT: i32 = 3;

pub async fn run(args: StatusArgs) -> Result<()> {
    let report: StatusReport = args.admin.client().get("/v1/status").await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", render(&report)),
    }
    if !args.exit_zero && !docker_ready(&report) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        eprintln!("segctl: not ready: the controller cannot reach Docker (see the docker line)");
        std::process::exit(NOT_READY_EXIT);
    }
    Ok(())
}

/// The controller reports `ok (API …)` once its Docker link is up.
pub fn docker_ready(r: &StatusReport) -> bool {
    r.docker.starts_with("ok")
}

pub fn render(r: &StatusReport) -> String {
    let uptime = super::duration::format_ms(r.uptime_secs * 1000);
    let rows = [
        ("controller", format!("segctl {}, pid {}, up {uptime}", r.version, r.pid)),
        ("store", format!("{}, {} secret(s), {}", r.store, r.secrets, r.state_dir)),
        ("docker", r.docker.clone()),
        ("admin socket", r.admin_socket.clone()),
        ("agent socket", format!("{} ({} watch stream(s) open)", r.agent_socket, r.watches)),
        ("socket guard", guard_line(r.agent_socket_status.as_ref())),
        ("access log", r.access_log.clone()),
        ("firewall", firewall_line(r.firewall.as_ref())),
    ];
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect();
    if let Some(c) = &r.cluster {
        let ca = if c.holds_ca { ", holds the CA" } else { "" };
        out.push_str(&format!(
            "{:<13} node {} at {}{ca}, CA {}…, certificate until {} (renewed automatically)\n",
            "cluster",
            c.node,
            c.endpoint,
            &c.ca_fingerprint[..16.min(c.ca_fingerprint.len())],
            crate::timefmt::rfc3339_ms(c.cert_expires_at_ms)
        ));
    }
    out
}

/// `nftables (Docker: iptables)`.
fn firewall_line(f: Option<&FirewallStatus>) -> String {
    let Some(f) = f else { return "unknown (controller does not report it)".into() };
    format!("{} (Docker: {})", f.backend, f.docker_backend.as_deref().unwrap_or("not detected"))
}

/// `ok, read-only dir yes`, or what was repaired last.
fn guard_line(s: Option<&AgentSocketStatus>) -> String {
    let Some(s) = s else { return "unknown (controller does not report it)".into() };
    let ro = if s.read_only_dir { "yes" } else { "NO: containers can replace the socket" };
    match &s.last_problem {
        Some(last) => format!("{}, read-only dir {ro} (last: {last})", s.state),
        None => format!("{}, read-only dir {ro}", s.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_field() {
        let r = StatusReport {
            version: "0.1.0".into(),
            pid: 7,
            uptime_secs: 75,
            store: "embedded".into(),
            state_dir: "/var/lib/seg".into(),
            admin_socket: "/run/seg/admin.sock".into(),
            agent_socket: "/run/seg/agent/agent.sock".into(),
            access_log: "/var/lib/seg/access.log".into(),
            secrets: 2,
            docker: "ok (API 1.41)".into(),
            watches: 3,
            agent_socket_status: Some(AgentSocketStatus {
                state: "repaired 2 time(s)".into(),
                repairs: 2,
                read_only_dir: true,
                last_problem: Some("the agent socket was removed".into()),
            }),
            firewall: Some(FirewallStatus {
                backend: "nftables".into(),
                docker_backend: Some("iptables".into()),
            }),
            cluster: None,
        };
        let text = render(&r);
        assert_eq!(text.lines().count(), 8);
        assert!(text.contains("firewall      nftables (Docker: iptables)"), "{text}");
        assert!(
            text.contains(
                "socket guard  repaired 2 time(s), read-only dir yes (last: the agent socket was removed)"
            ),
            "{text}"
        );
        assert!(text.contains("controller    segctl 0.1.0, pid 7, up 1m15s"), "{text}");
        assert!(text.contains("docker        ok (API 1.41)"), "{text}");
        assert!(text.contains("agent.sock (3 watch stream(s) open)"), "{text}");
        assert!(docker_ready(&r));
        let down = StatusReport { docker: "unreachable, retrying: connection refused".into(), ..r };
        assert!(!docker_ready(&down));
    }
}
