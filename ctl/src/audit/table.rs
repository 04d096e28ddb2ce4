//! The table output: one block per section with its score; per check, the
//! findings that need attention one by one and the passes folded into one line.

use super::catalog;
use super::model::{Finding, Level, Need, Report, Section};
use crate::table::Table;
use std::fmt::Write;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let engine = r.host.engine_version.as_deref().unwrap_or("unknown");
    let api = r.host.api_version.as_deref().unwrap_or("?");
    let host = r.host.hostname.as_deref().unwrap_or("this host");
    let _ = writeln!(
        out,
        "segctl audit of {host}: Docker {engine} (API {api}), {} running container(s), {} ms",
        r.host.containers, r.duration_ms
    );
    let controller = match r.controller.reachable {
        Some(true) => "reachable",
        Some(false) => "not reachable",
        None => "not asked",
    };
    let _ = writeln!(out, "controller: {controller} ({})", r.controller.detail);
    for s in &r.summary.sections {
        let findings: Vec<&Finding> = r.findings.iter().filter(|f| f.section == s.section).collect();
        if findings.is_empty() {
            continue;
        }
        let c = &s.counts;
        let _ = writeln!(
            out,
            "\n{} — score {} ({} pass, {} warn, {} info, {} note)",
            heading(s.section),
            score(s.score),
            c.pass,
            c.warn,
            c.info,
            c.note
        );
        section(&mut out, &findings);
    }
    let c = &r.summary.counts;
    let _ = writeln!(
        out,
        "\nScore {} — {} pass, {} warn, {} info, {} note",
        score(r.summary.score),
        c.pass,
        c.warn,
        c.info,
        c.note
    );
    degraded(&mut out, r);
    out
}

fn heading(s: Section) -> &'static str {
    match s {
        Section::Daemon => "DAEMON",
        Section::Containers => "CONTAINERS",
        Section::Seg => "SEG",
    }
}

fn score(s: Option<u32>) -> String {
    s.map_or_else(|| "n/a".to_owned(), |v| format!("{v}%"))
}

/// The findings of one section, in catalog order: level, check, then what
/// was found, aligned across the section and indented under its heading.
fn section(out: &mut String, findings: &[&Finding]) {
    let mut ids: Vec<&str> = findings.iter().map(|f| f.id).collect();
    ids.dedup();
    let mut rows = Table::new(1).min_widths(&[4, 28]);
    for id in ids {
        let of: Vec<&&Finding> = findings.iter().filter(|f| f.id == id).collect();
        let check = catalog::get(id);
        let mut attention = false;
        for f in of.iter().filter(|f| f.level != Level::Pass) {
            attention = true;
            rows.row([f.level.to_string(), id.to_owned(), format!("{}: {}", objects(f), f.detail)]);
        }
        let passes: Vec<&&&Finding> = of.iter().filter(|f| f.level == Level::Pass).collect();
        match passes.as_slice() {
            [] => {}
            [one] => {
                rows.row(["PASS".to_owned(), id.to_owned(), format!("{}: {}", objects(one), one.detail)]);
            }
            many => {
                rows.row([
                    "PASS".to_owned(),
                    id.to_owned(),
                    format!("{} ({} objects)", check.title, many.len()),
                ]);
            }
        }
        if attention && of.iter().any(|f| matches!(f.level, Level::Warn | Level::Info)) {
            rows.row([String::new(), String::new(), format!("fix: {}", check.remediation)]);
        }
    }
    for line in rows.render().lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn objects(f: &Finding) -> String {
    f.objects.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(" ")
}

fn degraded(out: &mut String, r: &Report) {
    for (need, label) in [
        (Need::Controller, "needed the controller"),
        (Need::Root, "needed root"),
        (Need::Host, "lacked host facts"),
    ] {
        let mut checks: Vec<&str> = r.degraded.iter().filter(|d| d.needs == need).map(|d| d.check).collect();
        checks.sort_by_key(|id| catalog::position(id));
        checks.dedup();
        if checks.is_empty() {
            continue;
        }
        // The controller's error is on the header line already.
        let why = r.degraded.iter().find(|d| d.needs == need).map(|d| d.reason.as_str()).unwrap_or_default();
        let why = if need == Need::Controller { String::new() } else { format!(" (e.g. {why})") };
        let _ = writeln!(out, "Checks that {label}: {}{why}", checks.join(", "));
    }
}
