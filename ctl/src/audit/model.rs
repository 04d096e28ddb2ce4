//! What an audit produces: findings, their levels and objects, and the
//! report with its score. These types are the JSON output
//! (`docs/audit-schema.json`); renaming a field is a schema change.

use serde::Serialize;
use std::fmt;

/// The version of the JSON report format; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// How a finding reads. Only `WARN` lowers the score; `--fail-on info`
/// also fails on `INFO`; `NOTE` (could not decide, or does not apply) never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Pass,
    Note,
    Info,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Note => "NOTE",
            Level::Info => "INFO",
            Level::Warn => "WARN",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// The Docker daemon and its socket (CIS sections 2 and 3).
    Daemon,
    /// Each running container (CIS sections 4 and 5).
    Containers,
    /// What only seg knows: secrets, policies, sidecars, setuid files.
    Seg,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::Daemon, Section::Containers, Section::Seg];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Daemon => "daemon",
            Section::Containers => "containers",
            Section::Seg => "seg",
        }
    }
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Object {
    pub kind: ObjectKind,
    /// Container name, `PROJECT/SERVICE`, socket or file path, `docker0`.
    pub name: String,
    /// The full container id, for containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Daemon,
    Socket,
    File,
    Network,
    Container,
    Service,
}

impl Object {
    pub fn daemon() -> Object {
        Object { kind: ObjectKind::Daemon, name: "dockerd".into(), id: None }
    }
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Object {
        Object { kind, name: name.into(), id: None }
    }
}

/// One check's verdict on one object (or on the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The stable check id, e.g. `cis-5.5-privileged` (see `docs/audit.md`).
    pub id: &'static str,
    /// The CIS Docker Benchmark 1.6 recommendation, when one exists.
    pub cis: Option<&'static str>,
    pub section: Section,
    pub title: &'static str,
    pub level: Level,
    pub objects: Vec<Object>,
    /// What was seen. Never holds a secret value.
    pub detail: String,
    pub remediation: &'static str,
    /// `segctl audit --fix` can change this.
    pub fixable: bool,
    /// The check's place in the catalog (report order), set by whoever
    /// made the finding from the catalog.
    #[serde(skip)]
    pub order: usize,
}

/// A check that ran with less than it needed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Degraded {
    pub check: &'static str,
    pub needs: Need,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// The node controller (admin socket): secret grants.
    Controller,
    /// Root on the host: container filesystems, iptables, /proc.
    Root,
    /// Facts the host did not give (dockerd's command line, a storage driver).
    Host,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub info: usize,
    pub note: usize,
}

impl Counts {
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Counts {
        let mut c = Counts::default();
        for f in findings {
            match f.level {
                Level::Pass => c.pass += 1,
                Level::Warn => c.warn += 1,
                Level::Info => c.info += 1,
                Level::Note => c.note += 1,
            }
        }
        c
    }

    /// Percentage of decided findings that pass; `None` when nothing was decided.
    /// INFO and NOTE are not verdicts, so they neither raise nor lower it.
    pub fn score(&self) -> Option<u32> {
        let decided = self.pass + self.warn;
        (decided > 0).then(|| ((self.pass * 100 + decided / 2) / decided) as u32)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SectionSummary {
    pub section: Section,
    pub score: Option<u32>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub score: Option<u32>,
    #[serde(flatten)]
    pub counts: Counts,
    pub sections: Vec<SectionSummary>,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Summary {
        let counts = Counts::of(findings);
        let sections = Section::ALL
            .iter()
            .map(|&section| {
                let counts = Counts::of(findings.iter().filter(|f| f.section == section));
                SectionSummary { section, score: counts.score(), counts }
            })
            .collect();
        Summary { score: counts.score(), counts, sections }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    pub hostname: Option<String>,
    pub engine_version: Option<String>,
    pub api_version: Option<String>,
    pub storage_driver: Option<String>,
    /// Running containers audited (after `--container`).
    pub containers: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControllerInfo {
    /// `None`: not asked (no selected check needs it).
    pub reachable: Option<bool>,
    /// The admin socket, and what went wrong when it is not reachable.
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    pub containers: Vec<String>,
    pub checks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

/// The whole audit, as `-o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub tool: Tool,
    /// Unix seconds when the audit started.
    pub generated_at: u64,
    pub duration_ms: u64,
    pub host: HostInfo,
    pub controller: ControllerInfo,
    pub filters: Filters,
    pub summary: Summary,
    /// Sorted by section, check id, then object.
    pub findings: Vec<Finding>,
    pub degraded: Vec<Degraded>,
}

impl Report {
    /// Sorts the findings and computes the summary.
    pub fn new(mut findings: Vec<Finding>, degraded: Vec<Degraded>, meta: ReportMeta) -> Report {
        findings.sort_by(|a, b| (a.section, a.order, &a.objects).cmp(&(b.section, b.order, &b.objects)));
        Report {
            format_version: FORMAT_VERSION,
            tool: Tool { name: "segctl", version: env!("CARGO_PKG_VERSION") },
            generated_at: meta.generated_at,
            duration_ms: meta.duration_ms,
            host: meta.host,
            controller: meta.controller,
            filters: meta.filters,
            summary: Summary::of(&findings),
            findings,
            degraded,
        }
    }

    /// Whether `--fail-on` is met: a non-zero exit for CI.
    pub fn fails(&self, on: FailOn) -> bool {
        let c = &self.summary.counts;
        match on {
            FailOn::Warn => c.warn > 0,
            FailOn::Info => c.warn + c.info > 0,
            FailOn::Never => false,
        }
    }
}

/// What the report says about the run rather than the host's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportMeta {
    pub generated_at: u64,
    pub duration_ms: u64,
    pub host: HostInfo,
    pub controller: ControllerInfo,
    pub filters: Filters,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Exit 3 when any finding is WARN.
    #[default]
    Warn,
    /// Exit 3 when any finding is WARN or INFO.
    Info,
    /// Always exit 0 once the audit ran.
    Never,
}
