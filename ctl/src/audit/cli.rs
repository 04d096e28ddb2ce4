//! `segctl audit [-o table|json|sarif] [--container NAME]... [--check ID]...
//! [--fail-on warn|info|never]` and `segctl audit --fix [--dry-run] [--default-deny]`.
//!
//! Exit status: 0 audit done (nothing at or above `--fail-on`), 3 findings at
//! or above `--fail-on`, 1 error (Docker unreachable, unknown container …),
//! 2 usage error.

use super::catalog::{self, CHECKS};
use super::collect::{self, Sources};
use super::docker_engine::DockerEngine;
use super::fix::{self, Fixer, HostFixer};
use super::model::{ControllerInfo, FailOn, Filters, HostInfo, Report, ReportMeta};
use super::{evaluate, sarif, table};
use crate::client::AdminOpts;
use crate::table::Table;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Exit status when findings reach `--fail-on`.
pub const FINDINGS_EXIT: i32 = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Sections, findings and score, for people.
    #[default]
    Table,
    /// The documented report (docs/audit-schema.json).
    Json,
    /// SARIF 2.1.0, for CI systems.
    Sarif,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Audit only this running container (name or id); repeatable.
    #[arg(long = "container", value_name = "NAME")]
    pub containers: Vec<String>,
    /// Run only this check: an id (cis-5.5-privileged), a CIS number (5.5) or
    /// a section (daemon, containers, seg); repeatable.
    #[arg(long = "check", value_name = "ID")]
    pub checks: Vec<String>,
    /// Exit 3 when a finding is at or above this level.
    #[arg(long, value_enum, default_value_t = FailOn::Warn)]
    pub fail_on: FailOn,
    /// Fix what seg owns (ICC off on docker0; with --default-deny, policies).
    #[arg(long, conflicts_with = "checks")]
    pub fix: bool,
    /// With --fix: print the plan, change nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,
    /// With --fix: give services no policy covers a default-deny ingress policy.
    #[arg(long, requires = "fix")]
    pub default_deny: bool,
    /// List the checks and exit.
    #[arg(long, conflicts_with = "fix")]
    pub list_checks: bool,
    #[command(flatten)]
    pub admin: AdminOpts,
    /// The controller's state directory (policies are read from <DIR>/policies).
    #[arg(long, env = "SEG_STATE_DIR", default_value = "/var/lib/seg", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The Docker Engine API socket.
    #[arg(long, default_value = "/var/run/docker.sock", value_name = "PATH")]
    pub docker_socket: PathBuf,
    /// dockerd's config file [default: its --config-file, else /etc/docker/daemon.json].
    #[arg(long, value_name = "PATH")]
    pub daemon_json: Option<PathBuf>,
}

pub async fn run(args: AuditArgs) -> Result<()> {
    if args.list_checks {
        print!("{}", list_checks(args.output)?);
        return Ok(());
    }
    let selected = if args.fix {
        // What --fix acts on; nothing else needs collecting.
        vec![catalog::ids::ICC, catalog::ids::UNCOVERED]
    } else if args.checks.is_empty() {
        CHECKS.iter().map(|c| c.id).collect()
    } else {
        catalog::select(&args.checks)?
    };
    let started = Instant::now();
    let generated_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let docker = crate::docker::connect(&args.docker_socket).await?;
    let api_version = docker.client_version().to_string();
    let engine = DockerEngine { docker };
    let mut src =
        Sources::host(args.docker_socket.clone(), args.state_dir.clone(), args.admin.run_dir.clone());
    src.daemon_json = args.daemon_json.clone();
    let (facts, info) = collect::collect(&engine, &src, &args.containers, &selected).await?;
    let run_dir = args.admin.run_dir.display().to_string();
    if args.fix {
        return run_fix(&args, &facts).await;
    }
    let (findings, degraded) = evaluate(&facts, &selected, &run_dir);
    let meta = ReportMeta {
        generated_at,
        duration_ms: started.elapsed().as_millis() as u64,
        host: HostInfo {
            hostname: info.name.clone(),
            engine_version: info.server_version.clone(),
            api_version: Some(api_version),
            storage_driver: info.driver.clone(),
            containers: facts.containers.len(),
        },
        controller: controller_info(&facts, &selected, &run_dir),
        filters: Filters {
            containers: args.containers.clone(),
            checks: selected.iter().map(|s| s.to_string()).collect(),
        },
    };
    let report = Report::new(findings, degraded, meta);
    let text = match args.output {
        Format::Table => table::render(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Sarif => serde_json::to_string_pretty(&sarif::render(&report))? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("cannot write the report")?;
    if report.fails(args.fail_on) {
        // Findings are an answer, not an error: a distinct status, no message.
        std::process::exit(FINDINGS_EXIT);
    }
    Ok(())
}

/// Whether the controller answered, for the report header.
fn controller_info(facts: &super::facts::Facts, selected: &[&str], run_dir: &str) -> ControllerInfo {
    let admin = format!("{}/admin.sock", run_dir.trim_end_matches('/'));
    match &facts.seg.grants {
        _ if !selected.contains(&catalog::ids::EXPOSED_SECRETS) => ControllerInfo {
            reachable: None,
            detail: format!("{admin} not asked: no selected check needs it"),
        },
        Ok(_) => ControllerInfo { reachable: Some(true), detail: admin },
        Err(why) => ControllerInfo { reachable: Some(false), detail: why.clone() },
    }
}

async fn run_fix(args: &AuditArgs, facts: &super::facts::Facts) -> Result<()> {
    let daemon_json = args.daemon_json.clone().unwrap_or_else(|| match &facts.daemon.config {
        Ok(cfg) => cfg.config_file.clone(),
        Err(_) => PathBuf::from(super::dockerd::DEFAULT_CONFIG),
    });
    // The live half goes through the controller, when it answers.
    let client = args.admin.client();
    let probe: Result<seg_common::api::policy::IccStatus> = client.get("/v1/icc").await;
    let controller = probe.is_ok().then_some(fix::AdminController { client });
    let mut fixer = HostFixer { daemon_json, controller };
    let state = fix::read_state(facts, &mut fixer, args.default_deny)?;
    let steps = fix::plan(&state, fixer.daemon_json());
    let mut out = String::new();
    if steps.is_empty() {
        out.push_str("Nothing to fix: what seg owns is already as it should be.\n");
    } else {
        out.push_str("Plan:\n");
        for (i, s) in steps.iter().enumerate() {
            out.push_str(&format!("  {}. {s}\n", i + 1));
        }
    }
    out.push_str(
        "Everything else is reported with remediation text by `segctl audit`; seg does not change it.\n",
    );
    let actionable = steps.iter().any(fix::Step::actionable);
    if !actionable && !steps.is_empty() {
        out.push_str("Nothing to change now.\n");
    }
    print!("{out}");
    if args.dry_run || !actionable {
        return Ok(());
    }
    let outcomes = fix::apply(&steps, &mut fixer).await?;
    for (i, o) in outcomes.iter().enumerate() {
        let what = match (o.step.actionable(), o.changed) {
            (false, _) => "not applied (see above)",
            (true, true) => "done",
            (true, false) => "already so",
        };
        println!("  {}. {what}", i + 1);
    }
    println!("Run `segctl audit` again to see the result.");
    Ok(())
}

fn list_checks(format: Format) -> Result<String> {
    if format != Format::Table {
        let list: Vec<serde_json::Value> = CHECKS
            .iter()
            .map(|c| {
                serde_json::json!({"id": c.id, "cis": c.cis, "section": c.section, "title": c.title,
                    "remediation": c.remediation, "fixable": c.fixable})
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut table = Table::new(1).min_widths(&[28, 11]);
    for c in CHECKS.iter() {
        table.row([c.id, c.section.as_str(), c.title]);
    }
    Ok(table.render())
}
