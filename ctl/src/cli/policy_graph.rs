//! `segctl policy graph`: what the applied policies (or policy files)
//! allow, as a picture — SVG through Graphviz's `dot` when it is
//! installed, else the dot text with a note; or dot, or Mermaid.

use super::AdminClient;
use crate::client::encode;
use crate::policy::{self, graph, Policy};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use seg_common::api::policy::{PolicyDetail, PolicySummary};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// Only the flows that touch this project.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    #[arg(short, long, value_enum, default_value_t = GraphFormat::Svg)]
    pub output: GraphFormat,
    /// Draw these policy files (or compose files with `x-seg:`) instead of
    /// the applied policies; no controller needed.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// SVG, drawn by Graphviz (`dot`); dot text when Graphviz is missing.
    Svg,
    Dot,
    Mermaid,
}

pub async fn run(args: GraphArgs, client: &AdminClient) -> Result<()> {
    let policies = match args.files.is_empty() {
        true => applied(client).await?,
        false => {
            args.files.iter().map(|f| policy::lint(f).map_err(anyhow::Error::from)).collect::<Result<_>>()?
        }
    };
    let g = graph::build(&policies, args.project.as_deref());
    let text = match args.output {
        GraphFormat::Dot => g.dot(),
        GraphFormat::Mermaid => g.mermaid(),
        GraphFormat::Svg => return svg(&g.dot()),
    };
    print!("{text}");
    Ok(())
}

/// Every applied policy, parsed from the source it was applied from.
async fn applied(client: &AdminClient) -> Result<Vec<Policy>> {
    let list: Vec<PolicySummary> = client.get("/v1/policies").await?;
    let mut out = Vec::new();
    for summary in list {
        let d: PolicyDetail = client.get(&format!("/v1/policies/{}", encode(&summary.name))).await?;
        out.push(policy::parse_source(&d.source, &summary.origin, None)?);
    }
    Ok(out)
}

fn svg(dot: &str) -> Result<()> {
    let child = Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::inherit()).spawn();
    let Ok(mut child) = child else {
        eprintln!(
            "segctl: Graphviz is not installed (`apt-get install graphviz`): printing the dot text instead"
        );
        print!("{dot}");
        return Ok(());
    };
    child.stdin.take().expect("piped").write_all(dot.as_bytes()).context("writing to dot")?;
    let status = child.wait().context("waiting for dot")?;
    anyhow::ensure!(status.success(), "dot -Tsvg failed ({status})");
    Ok(())
}
