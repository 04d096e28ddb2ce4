//! `segctl compose`: writes the override file that delivers a compose
//! file's `x-seg.secrets` (sidecars, tmpfs volumes, mounts). Local only: it
//! needs no controller (the grants are made by `segctl policy apply`).

use crate::compose::{self, Options, DEFAULT_IMAGE};
use crate::policy;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct ComposeArgs {
    /// The compose file with an `x-seg.secrets` block.
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = "docker-compose.yml")]
    pub file: PathBuf,
    /// Where to write the override [default: docker-compose.seg.yml next to FILE]; `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The compose project you bring the app up as (`docker-compose -p`): checked
    /// against the project `policy apply` grants to.
    #[arg(short = 'p', long = "project", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Run directory of the controller; its `agent/` directory is mounted into the sidecars.
    #[arg(long, env = "SEG_RUN_DIR", default_value = "/run/seg", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// The sidecar image.
    #[arg(long, default_value = DEFAULT_IMAGE, value_name = "IMAGE")]
    pub image: String,
}

pub async fn run(args: ComposeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: cannot read", args.file.display()))?;
    let shown = args.file.display().to_string();
    let agent_dir = args.run_dir.join("agent").display().to_string();
    let opts = Options { agent_dir, image: args.image.clone(), file: shown.clone() };
    let generated = compose::generate(&text, &opts)?;
    let project = grant_project(&text, &args.file)?;
    if let (Some(given), Some(p)) = (&args.project, &project) {
        if given != p {
            anyhow::bail!(
                "-p {given}: `segctl policy apply -f {shown}` grants to project `{p}`, so sidecars of \
                 project `{given}` would get nothing; set `project: {given}` under `x-seg:` (or bring the \
                 app up as `-p {p}`)"
            );
        }
    }
    let out = args.output.clone().unwrap_or_else(|| default_output(&args.file));
    if out == Path::new("-") {
        print!("{generated}");
        return Ok(());
    }
    write_file(&out, &generated)?;
    let p = args.project.or(project).map(|p| format!(" -p {p}")).unwrap_or_default();
    eprintln!("wrote {}; next:", out.display());
    eprintln!("  segctl policy apply -f {shown}        # grants the declared secrets");
    eprintln!("  docker-compose{p} -f {shown} -f {} up -d", out.display());
    Ok(())
}

/// `docker-compose.seg.yml` in the compose file's directory.
fn default_output(file: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join("docker-compose.seg.yml")
}

/// The project `policy apply` would grant to (as the controller computes it).
fn grant_project(text: &str, file: &Path) -> Result<Option<String>> {
    let dir = policy::dir_project(file);
    let parsed = policy::parse_compose(text, &file.display().to_string(), dir.as_deref())?;
    Ok(parsed.project().map(str::to_string))
}

/// Written whole, then renamed over the old one: a half-written override
/// never reaches docker-compose.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}
