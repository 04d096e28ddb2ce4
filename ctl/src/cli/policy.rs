//! `segctl policy`: apply, list, show, remove, diff, lint, check and verify
//! network policies. Everything but `lint` goes through the controller,
//! which parses the file again itself (so both report the same line and
//! column) and owns the firewall.

use super::{AdminOpts, Output};
use crate::client::encode;
use crate::policy;
use crate::table::Table;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use seg_common::api::policy::{
    ApplyResult, CheckResult, DiffResult, GrantChanges, PolicyDetail, PolicySource, PolicySummary,
    RemoveResult, VerifyReport,
};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub cmd: PolicyCmd,
    #[command(flatten)]
    pub admin: AdminOpts,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCmd {
    /// Apply a policy file, or a compose file's `x-seg:` key (replaces the project's policy).
    Apply(FileArg),
    /// List the applied policies.
    Ls {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show an applied policy, normalized (every default spelled out).
    Show {
        /// The project (`_standalone` for containers without one).
        name: String,
        #[arg(short, long, value_enum, default_value_t = ShowFormat::Yaml)]
        output: ShowFormat,
    },
    /// Remove a policy: its rules go (networks and attachments stay).
    Rm { name: String },
    /// Print the rule changes `apply -f FILE` would make (iptables-restore input), without making them.
    Diff(FileArg),
    /// Check a policy file without applying it (no controller needed).
    Lint(FileArg),
    /// Would a flow be allowed by the applied policies, and which rule decides?
    Check {
        /// `world`, a service (`web`, `shop/web`) or an address.
        #[arg(long, value_name = "SERVICE|world")]
        from: String,
        /// A service (`db`, `shop/db`) or an address.
        #[arg(long, value_name = "SERVICE")]
        to: String,
        /// `5432/tcp`, `53/udp` (a bare number is tcp).
        #[arg(long, value_name = "PORT/PROTO")]
        port: String,
    },
    /// Draw what the applied policies allow: SVG (Graphviz), dot or Mermaid.
    Graph(super::policy_graph::GraphArgs),
    /// Probe the real flows between running containers and compare with the policy.
    Verify {
        /// Only this policy (default: all).
        name: Option<String>,
        /// How long a probe waits for an answer before calling the flow blocked.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        timeout_ms: u64,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Debug, Clone, Args)]
pub struct FileArg {
    /// A policy YAML file, or a compose file with an `x-seg:` key.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Yaml,
    Json,
    /// The text it was applied from.
    Source,
}

pub async fn run(args: PolicyArgs) -> Result<()> {
    let client = args.admin.client();
    match args.cmd {
        PolicyCmd::Lint(f) => lint(&f.file),
        PolicyCmd::Graph(g) => super::policy_graph::run(g, &client).await,
        PolicyCmd::Apply(f) => {
            let result: ApplyResult = client.call("POST", "/v1/policies", Some(&source(&f.file)?)).await?;
            print!("{}", render_apply(&result));
            Ok(())
        }
        PolicyCmd::Diff(f) => {
            let diff: DiffResult =
                client.call("POST", "/v1/policies/-/diff", Some(&source(&f.file)?)).await?;
            print_diff(&diff);
            Ok(())
        }
        PolicyCmd::Ls { output } => {
            let list: Vec<PolicySummary> = client.get("/v1/policies").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => print!("{}", render_list(&list)),
            }
            Ok(())
        }
        PolicyCmd::Show { name, output } => {
            let d: PolicyDetail = client.get(&format!("/v1/policies/{}", encode(&name))).await?;
            match output {
                ShowFormat::Yaml => print!("{}", serde_norway::to_string(&d.policy)?),
                ShowFormat::Json => println!("{}", serde_json::to_string_pretty(&d)?),
                ShowFormat::Source => print!("{}", d.source),
            }
            Ok(())
        }
        PolicyCmd::Rm { name } => {
            let r: RemoveResult =
                client.call("DELETE", &format!("/v1/policies/{}", encode(&name)), None::<&()>).await?;
            println!(
                "policy {} removed: {} chain(s) removed, {} rule(s) left in force",
                r.name, r.rules.chains_removed, r.rules.rules_total
            );
            print!("{}", render_grants(&r.grants, "granted", "revoked"));
            Ok(())
        }
        PolicyCmd::Check { from, to, port } => {
            let path = format!(
                "/v1/policies/-/check?from={}&to={}&port={}",
                encode(&from),
                encode(&to),
                encode(&port)
            );
            let c: CheckResult = client.get(&path).await?;
            println!(
                "{} {} → {} {}: {}",
                if c.allowed { "ALLOW" } else { "DENY" },
                c.from,
                c.to,
                c.port,
                c.rule
            );
            Ok(())
        }
        PolicyCmd::Verify { name, timeout_ms, output } => {
            let mut path = format!("/v1/policies/-/verify?timeout_ms={timeout_ms}");
            if let Some(n) = &name {
                path.push_str(&format!("&name={}", encode(n)));
            }
            let report: VerifyReport = client.get(&path).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => print!("{}", render_verify(&report)),
            }
            match report.mismatches() {
                0 => Ok(()),
                n => bail!("{n} of {} probed flow(s) differ from the policy", report.rows.len()),
            }
        }
    }
}

fn lint(file: &Path) -> Result<()> {
    let p = policy::lint(file)?;
    let project = p.project().unwrap_or("(standalone containers)");
    let secrets = match p.secrets.0.len() {
        0 => String::new(),
        n => format!(", {n} secret(s) declared"),
    };
    println!(
        "{}: ok: project {project}, {} service(s), {} network(s){secrets}",
        file.display(),
        p.services.len(),
        p.networks.len()
    );
    Ok(())
}

/// Reads the file and checks it here first, so a bad file is refused even
/// when the controller is down (with the same message it would give).
fn source(file: &Path) -> Result<PolicySource> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let shown = file.display().to_string();
    let dir_project = policy::dir_project(file);
    policy::parse_source(&text, &shown, dir_project.as_deref())?;
    Ok(PolicySource { file: shown, text, dir_project })
}

pub fn render_apply(r: &ApplyResult) -> String {
    let mut out = if r.changed {
        format!(
            "policy {} applied: {} chain(s) written ({} rule(s)), {} removed; {} rule(s) in force\n",
            r.name,
            r.rules.chains_written,
            r.rules.rules_written,
            r.rules.chains_removed,
            r.rules.rules_total
        )
    } else {
        format!("policy {}: already applied and in force, nothing written\n", r.name)
    };
    out.extend(r.networks.created.iter().map(|n| format!("created network {n}\n")));
    out.extend(r.networks.attachments.iter().map(|a| format!("{a}\n")));
    out.extend(r.networks.warnings.iter().map(|w| format!("warning: {w}\n")));
    out.push_str(&render_grants(&r.grants, "granted", "revoked"));
    out
}

/// One line per grant made or taken back (`granted db-password to shop/app`).
pub fn render_grants(g: &GrantChanges, plus: &str, minus: &str) -> String {
    let mut out = String::new();
    out.extend(g.granted.iter().map(|x| format!("{plus} {x}\n")));
    out.extend(g.revoked.iter().map(|x| format!("{minus} {x}\n")));
    out
}

fn print_diff(d: &DiffResult) {
    for note in &d.notes {
        eprintln!("# note: {note}");
    }
    if !d.grants.is_empty() {
        println!("# grants (x-seg.secrets)");
        print!("{}", render_grants(&d.grants, "+ grant", "- grant"));
    }
    if d.v4.is_empty() && d.v6.is_empty() {
        let what = if d.grants.is_empty() {
            "no change, the live rules already match"
        } else {
            "the live rules already match"
        };
        eprintln!("# policy {}: {what}", d.name);
        return;
    }
    if !d.v4.is_empty() {
        // The nftables backend's one script (both families) comes as `v4`.
        let nft = d.v4.lines().next().is_some_and(|l| l.contains(" inet seg"));
        println!("{}", if nft { "# nft -f -" } else { "# iptables-restore --noflush" });
        print!("{}", d.v4);
    }
    if !d.v6.is_empty() {
        println!("# ip6tables-restore --noflush");
        print!("{}", d.v6);
    }
}

pub fn render_list(list: &[PolicySummary]) -> String {
    if list.is_empty() {
        return "no policy applied\n".into();
    }
    let mut table = Table::new(1).header(["NAME", "SERVICES", "NETWORKS", "FROM"]).min_widths(&[20, 28, 20]);
    for p in list {
        table.row([p.name.clone(), p.services.join(","), p.networks.join(","), p.origin.to_string()]);
    }
    table.render()
}

pub fn render_verify(r: &VerifyReport) -> String {
    use seg_common::api::policy::Reach;
    let w = r.rows.iter().map(|x| x.from_container.len().max(x.to_container.len())).max().unwrap_or(0).max(4);
    let mut table =
        Table::new(1).header(["FROM", "TO", "TARGET", "EXPECTED", "OBSERVED"]).min_widths(&[w, w, 22, 9, 9]);
    let word = |reach| match reach {
        Reach::Reachable => "reachable",
        Reach::Blocked => "blocked",
        Reach::Unknown => "unknown",
    };
    for row in &r.rows {
        let mark = if row.ok() { "ok" } else { "MISMATCH" };
        table.row([
            row.from_container.clone(),
            row.to_container.clone(),
            row.target.clone(),
            word(row.expected).to_owned(),
            word(row.observed).to_owned(),
            format!("{mark}  ({}; probe: {})", row.because, row.detail),
        ]);
    }
    let mut out = table.render();
    out.extend(r.skipped.iter().map(|s| format!("not probed: {s}\n")));
    out.push_str(&format!(
        "{} flow(s) probed from inside the containers (timeout {} ms), {} mismatch(es)\n",
        r.rows.len(),
        r.timeout_ms,
        r.mismatches()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use seg_common::api::policy::{DeclaredGrant, NetworkReport, Reach, RulesReport, VerifyRow};

    fn grant(secret: &str, to: &str) -> DeclaredGrant {
        DeclaredGrant {
            secret: seg_common::name::SecretName::parse(secret).unwrap(),
            to: seg_common::api::GrantTarget::parse(to).unwrap(),
        }
    }

    #[test]
    fn apply_and_verify_read_well() {
        let mut r = ApplyResult {
            name: "shop".into(),
            changed: true,
            networks: NetworkReport {
                created: vec!["shop_backend".into()],
                attachments: vec!["connect c1 to shop_backend".into()],
                warnings: vec!["network `x` exists but differs".into()],
            },
            rules: RulesReport { chains_written: 3, rules_written: 9, chains_removed: 1, rules_total: 30 },
            grants: GrantChanges {
                granted: vec![grant("db-password", "shop/app")],
                revoked: vec![grant("db-password", "shop/web")],
            },
        };
        let text = render_apply(&r);
        assert!(
            text.starts_with("policy shop applied: 3 chain(s) written (9 rule(s)), 1 removed; 30 rule(s)")
        );
        assert!(text.contains("created network shop_backend\nconnect c1 to shop_backend\nwarning: network"));
        assert!(
            text.ends_with("granted db-password to shop/app\nrevoked db-password to shop/web\n"),
            "{text}"
        );
        assert_eq!(
            render_grants(&r.grants, "+ grant", "- grant").lines().next(),
            Some("+ grant db-password to shop/app")
        );
        r.changed = false;
        assert!(render_apply(&r).starts_with("policy shop: already applied and in force, nothing written"));
        let row = |observed| VerifyRow {
            from: "shop/web".into(),
            from_container: "shop_web_1".into(),
            to: "shop/db".into(),
            to_container: "shop_db_1".into(),
            target: "172.20.0.3:5432/tcp".into(),
            expected: Reach::Blocked,
            because: "default deny".into(),
            observed,
            detail: "timeout".into(),
        };
        let report = VerifyReport {
            rows: vec![row(Reach::Blocked), row(Reach::Reachable)],
            skipped: vec![],
            timeout_ms: 700,
        };
        let text = render_verify(&report);
        assert!(
            text.contains("shop_web_1 shop_db_1  172.20.0.3:5432/tcp    blocked   blocked   ok"),
            "{text}"
        );
        assert!(
            text.contains("MISMATCH")
                && text.ends_with(
                    "2 flow(s) probed from inside the containers (timeout 700 ms), 1 mismatch(es)\n"
                )
        );
        assert_eq!(render_list(&[]), "no policy applied\n");
    }
}
