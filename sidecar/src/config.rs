//! Command line and environment.

use crate::health;
use crate::notify::OnRotate;
use crate::writer::{DirOptions, Owner};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use seg_common::api::PostRotate;
use seg_common::file_name::FileName;
use seg_common::name::SecretName;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "seg-sidecar",
    version,
    about = "Fetches the secrets granted to its container from the seg node controller into a tmpfs, \
             renews their leases and wipes them when a lease runs out.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Abstract unix socket (no leading '@') where the running sidecar answers
    /// health queries. Distinct sidecars sharing a network namespace need
    /// distinct names.
    #[arg(long, env = "SEG_HEALTH_SOCKET", default_value = health::DEFAULT_SOCKET, global = true)]
    pub health_socket: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch secrets and keep them current (the default).
    Run(RunArgs),
    /// Ask the running sidecar whether every secret is on disk within its
    /// lease; exit 0 if so, else 1 with the reason.
    Health,
    /// Open the controller's watch stream and print its events (names and
    /// versions, never values). A diagnostic; with --connections and
    /// --no-read, a load and abuse generator for tests and benchmarks.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The controller's agent socket.
    #[arg(long, env = "SEG_AGENT_SOCKET", default_value = "/run/seg/agent/agent.sock")]
    pub agent_socket: PathBuf,
    /// Comma-separated secrets to watch [default: every granted secret].
    #[arg(long, env = "SEG_SECRETS", value_parser = parse_names)]
    pub secrets: Option<NameList>,
    /// Open this many streams; events are printed from the first one only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Read each answer's head, then never read the streams.
    #[arg(long)]
    pub no_read: bool,
    /// Stop after this many seconds [default: at SIGTERM or SIGINT].
    #[arg(long)]
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The controller's agent socket.
    #[arg(long, env = "SEG_AGENT_SOCKET", default_value = "/run/seg/agent/agent.sock")]
    pub agent_socket: PathBuf,
    /// Directory to write secrets to; must be a tmpfs shared with the app.
    #[arg(long, env = "SEG_DIR", default_value = "/run/secrets")]
    pub dir: PathBuf,
    /// Comma-separated secrets to fetch, each `NAME` or `NAME:FILE` (written
    /// to FILE in the directory instead of NAME). Default: every secret
    /// granted to this container, re-discovered periodically.
    #[arg(long, env = "SEG_SECRETS", value_parser = parse_names)]
    pub secrets: Option<NameList>,
    /// File mode, octal.
    #[arg(long, env = "SEG_MODE", default_value = "0400", value_parser = parse_mode)]
    pub mode: u32,
    /// Owner of the files, UID[:GID] (numeric). Default: the sidecar's own
    /// user. Another owner needs CAP_CHOWN.
    #[arg(long, env = "SEG_OWNER", value_parser = parse_owner)]
    pub owner: Option<Owner>,
    /// Accept a secrets directory that is not a tmpfs (secrets may then reach
    /// persistent storage).
    #[arg(long, env = "SEG_ALLOW_NON_TMPFS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub allow_non_tmpfs: bool,
    /// error, warn, info, debug or trace.
    #[arg(long, env = "SEG_LOG", default_value = "info", value_parser = parse_level)]
    pub log_level: tracing::Level,
    /// Keep a watch stream open (pushed rotations and revocations) and
    /// report the versions on disk. `false`: lease renewals only.
    #[arg(long, env = "SEG_WATCH", default_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub watch: bool,
    /// After files changed: `signal:HUP` (or USR1, USR2, WINCH) to the app's
    /// containers, `http://SERVICE[:PORT]/PATH` (a POST of names and
    /// versions), or `command` (the host command the operator registered).
    #[arg(long, env = "SEG_ON_ROTATE", value_parser = parse_action)]
    pub on_rotate: Option<PostRotate>,
    /// The service to notify [default: the one this sidecar acts for].
    #[arg(long, env = "SEG_ON_ROTATE_TARGET", requires = "on_rotate")]
    pub on_rotate_target: Option<String>,
    /// Changes this close together make one notification, e.g. 500ms, 2s.
    #[arg(long, env = "SEG_ON_ROTATE_DEBOUNCE", default_value = "500ms", value_parser = parse_duration)]
    pub on_rotate_debounce: Duration,
}

impl RunArgs {
    pub fn dir_options(&self) -> DirOptions {
        let files = self.secrets.as_ref().map(|list| list.1.clone()).unwrap_or_default();
        DirOptions { mode: self.mode, owner: self.owner, allow_non_tmpfs: self.allow_non_tmpfs, files }
    }

    /// The post-rotate action, if one was declared.
    pub fn on_rotate(&self) -> Option<OnRotate> {
        Some(OnRotate {
            action: self.on_rotate.clone()?,
            target: self.on_rotate_target.clone(),
            debounce: self.on_rotate_debounce,
        })
    }

    /// The requested names, sorted and without duplicates, or `None` for
    /// "every granted secret" (also when the list is empty, e.g.
    /// `SEG_SECRETS=` in a compose file).
    pub fn requested(&self) -> Option<Vec<SecretName>> {
        let names = self.secrets.as_ref()?.0.clone();
        (!names.is_empty()).then_some(names)
    }
}

/// A comma-separated list of secret names, each with the file it is
/// written to when that is not its own name.
#[derive(Debug, Clone)]
pub struct NameList(pub Vec<SecretName>, pub BTreeMap<SecretName, FileName>);

fn parse_action(raw: &str) -> Result<PostRotate, String> {
    PostRotate::parse(raw).map_err(|e| e.to_string())
}

/// `250ms`, `2s`, `1m`: a number and a unit.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let bad = || format!("{raw:?} is not a duration like 500ms, 2s or 1m");
    let too_long = || format!("{raw} is too long: use at most 10m");
    // humantime also reads `1.5s`, `2 min` and sums; this option documents
    // one whole number and ms, s or m.
    let unit = raw.trim_start_matches(|c: char| c.is_ascii_digit());
    if unit.len() == raw.len() || !["ms", "s", "m"].contains(&unit) {
        return Err(bad());
    }
    let d = humantime::parse_duration(raw).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(),
        _ => bad(),
    })?;
    if d > Duration::from_secs(600) {
        return Err(too_long());
    }
    Ok(d)
}

fn parse_names(raw: &str) -> Result<NameList, String> {
    let (mut names, mut files) = (Vec::new(), BTreeMap::new());
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, file) = part.split_once(':').map_or((part, None), |(n, f)| (n, Some(f)));
        let name = SecretName::parse(name).map_err(|e| e.to_string())?;
        if let Some(file) = file {
            let file = FileName::parse(file).map_err(|e| format!("{part}: {e}"))?;
            if files.insert(name.clone(), file.clone()).is_some_and(|f| f != file) {
                return Err(format!("{name} is given two file names"));
            }
        }
        names.push(name);
    }
    names.sort();
    names.dedup();
    // Two secrets must not end up in one file.
    let mut taken: BTreeMap<String, &SecretName> = BTreeMap::new();
    for name in &names {
        let file = files.get(name).map_or(name.as_str(), FileName::as_str);
        if let Some(other) = taken.insert(file.to_string(), name) {
            return Err(format!("{other} and {name} would both be written to {file}"));
        }
    }
    Ok(NameList(names, files))
}

fn parse_mode(raw: &str) -> Result<u32, String> {
    let digits = raw.trim().trim_start_matches("0o");
    let mode =
        u32::from_str_radix(digits, 8).map_err(|_| format!("{raw:?} is not an octal file mode like 0400"))?;
    if mode > 0o777 {
        return Err(format!(
            "mode {raw} has bits beyond 0777 (setuid, setgid, sticky); use permission bits only"
        ));
    }
    if mode & 0o444 == 0 {
        return Err(format!("mode {raw} lets nobody read the secret; use e.g. 0400 or 0440"));
    }
    Ok(mode)
}

fn parse_owner(raw: &str) -> Result<Owner, String> {
    let bad = || format!("{raw:?} is not UID[:GID] with numeric ids (e.g. 1000 or 1000:1000)");
    let (uid, gid) = match raw.trim().split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (raw.trim(), None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse()).transpose().map_err(|_| bad())?;
    Ok(Owner { uid, gid })
}

fn parse_level(raw: &str) -> Result<tracing::Level, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a log level: use error, warn, info, debug or trace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("seg-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        let run = cli.run;
        assert_eq!(run.dir, PathBuf::from("/run/secrets"));
        assert_eq!(run.agent_socket, PathBuf::from("/run/seg/agent/agent.sock"));
        assert_eq!((run.mode, run.owner, run.allow_non_tmpfs), (0o400, None, false));
        assert!(run.requested().is_none());
        assert_eq!(cli.health_socket, health::DEFAULT_SOCKET);
    }

    #[test]
    fn flags_and_the_run_subcommand() {
        let cli = parse(&["run", "--secrets", "b,a,b", "--mode", "440", "--owner", "1000:1001"]).unwrap();
        let Some(Command::Run(run)) = cli.command else { panic!("run subcommand not parsed") };
        let names: Vec<_> = run.requested().unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((run.mode, run.owner), (0o440, Some(Owner { uid: 1000, gid: Some(1001) })));
        let cli = parse(&["health", "--health-socket", "x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Health)));
        assert_eq!(cli.health_socket, "x");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["--secrets", "a,../etc"][..], "must start with"),
            (&["--secrets", "a/b"], "'/'"),
            (&["--mode", "4755"], "setuid"),
            (&["--mode", "0200"], "nobody read"),
            (&["--mode", "rw"], "octal"),
            (&["--owner", "root"], "numeric"),
            (&["--log-level", "loud"], "log level"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_empty_list_means_every_granted_secret() {
        assert!(parse(&["--secrets", ""]).unwrap().run.requested().is_none());
        assert!(parse(&["--secrets", " , "]).unwrap().run.requested().is_none());
        let run = parse(&["--secrets", " a , b,"]).unwrap().run;
        assert_eq!(run.requested().unwrap().len(), 2);
    }

    #[test]
    fn allow_non_tmpfs_takes_boolish_values() {
        assert!(parse(&["--allow-non-tmpfs"]).unwrap().run.allow_non_tmpfs);
    }

    #[test]
    fn push_options() {
        let run = parse(&[]).unwrap().run;
        assert!(run.watch && run.on_rotate().is_none());
        assert_eq!(run.on_rotate_debounce, Duration::from_millis(500));
        let run =
            parse(&["--on-rotate", "signal:HUP", "--on-rotate-target", "web", "--on-rotate-debounce", "2s"])
                .unwrap()
                .run;
        let on = run.on_rotate().unwrap();
        assert_eq!(
            (on.action.to_string(), on.target.as_deref(), on.debounce),
            ("signal:HUP".into(), Some("web"), Duration::from_secs(2))
        );
        assert!(!parse(&["--watch", "false"]).unwrap().run.watch);
        for (args, needle) in [
            (&["--on-rotate", "signal:KILL"][..], "allowed signals"),
            (&["--on-rotate", "exec:rm"], "use signal:HUP"),
            (&["--on-rotate-debounce", "5"], "not a duration"),
            (&["--on-rotate-target", "web"], "--on-rotate"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let w = parse(&["watch", "--connections", "3", "--no-read"]).unwrap();
        assert!(matches!(w.command, Some(Command::Watch(WatchArgs { connections: 3, no_read: true, .. }))));
    }

    #[test]
    fn owner_without_group_keeps_the_group() {
        assert_eq!(parse_owner("1000").unwrap(), Owner { uid: 1000, gid: None });
    }

    #[test]
    fn debounce_is_one_number_and_ms_s_or_m_up_to_10m() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration(" 10m "), Ok(Duration::from_secs(600)));
        for bad in ["5", "", "1.5s", "2 s", "1m30s", "3h", "-1s", "ms"] {
            assert!(parse_duration(bad).unwrap_err().contains("is not a duration like 500ms"), "{bad}");
        }
        assert_eq!(parse_duration("11m").unwrap_err(), "11m is too long: use at most 10m");
    }

    #[test]
    fn a_secret_may_name_its_file_and_two_secrets_never_share_one() {
        let run = parse(&["--secrets", "tls.key:server.key,db"]).unwrap().run;
        let names: Vec<_> = run.requested().unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["db", "tls.key"]);
        let files = run.dir_options().files;
        assert_eq!(
            files.iter().map(|(n, f)| (n.as_str(), f.as_str())).collect::<Vec<_>>(),
            [("tls.key", "server.key")]
        );
        for (bad, says) in [
            ("a:b,b", "a and b would both be written to b"),
            ("a:x,b:x", "a and b would both be written to x"),
            ("a:x,a:y", "a is given two file names"),
            ("a:../x", "a:../x: file name \"../x\" must start with a letter or a digit"),
            ("a:x/y", "has '/' at byte 1"),
        ] {
            let err = parse(&["--secrets", bad]).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
