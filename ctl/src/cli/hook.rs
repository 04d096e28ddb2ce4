//! `segctl secret hook`: show or set a secret's rotation hooks — a host
//! command (`--pre-rotate CMD`, `sh -c`), or a command run inside the
//! running containers of a service (`--pre-rotate-exec SERVICE -- PROG ARGS`),
//! resolved by compose labels at each rotation.

use super::duration::{format_ms, parse_ms};
use super::Output;
use crate::client::AdminClient;
use anyhow::{bail, Context, Result};
use clap::Args;
use seg_common::api::{
    ExecHook, HookSpec, Hooks, SetHooks, DEFAULT_HOOK_TIMEOUT_MS, MAX_HOOK_TIMEOUT_MS, MIN_HOOK_TIMEOUT_MS,
};
use seg_common::name::SecretName;

pub const HOOK_EXAMPLES: &str = r#"Examples:
  # Change the role's password inside the db service: psql's \password reads the new
  # value on stdin and sends only its SCRAM verifier (no value in argv or the server log):
  segctl secret hook db-password --pre-rotate-exec shop/db --exec-user postgres -- \
    sh -c 'IFS= read -r pw || [ -n "$pw" ]; printf "%s\n%s\n" "$pw" "$pw" | exec psql -X -q -v ON_ERROR_STOP=1 -c "\\password postgres"'
  # Make every replica of the web service reload its key once it has the new one:
  segctl secret hook tls.key --post-rotate-exec web -- kill -HUP 1
A bare SERVICE means that service in each project of the secret's consumers; a scaled
service runs the hook in every running replica (pre-rotate: all must succeed)."#;

pub fn parse_hook_timeout(raw: &str) -> Result<u64, String> {
    let ms = parse_ms(raw).map_err(|e| e.to_string())?;
    if !(MIN_HOOK_TIMEOUT_MS..=MAX_HOOK_TIMEOUT_MS).contains(&ms) {
        return Err(format!("hook timeout {raw} is out of range: use 100ms to 10m"));
    }
    Ok(ms)
}

/// What `segctl secret hook` was asked to change.
#[derive(Debug, Clone, Args)]
pub struct HookArgs {
    /// Run CMD on this host (`sh -c`) before a rotation is distributed, with
    /// the new value on stdin; a failure or timeout aborts the rotation.
    #[arg(long, value_name = "CMD", conflicts_with = "pre_rotate_exec")]
    pub pre_rotate: Option<String>,
    /// Run the command after `--` inside every running container of SERVICE
    /// (`PROJECT/SERVICE`, or `SERVICE` in the consumers' projects) before a
    /// rotation is distributed, the new value on its stdin; any failure aborts.
    #[arg(long, value_name = "SERVICE", conflicts_with = "post_rotate_exec", requires = "command")]
    pub pre_rotate_exec: Option<String>,
    /// Run CMD on this host when a sidecar declaring SEG_ON_ROTATE=command
    /// reports that the secret changed on its disk (event JSON on stdin, no value).
    #[arg(long, value_name = "CMD", conflicts_with = "post_rotate_exec")]
    pub post_rotate: Option<String>,
    /// Run the command after `--` inside every running container of SERVICE
    /// once the rotation is distributed and acknowledged (event JSON on
    /// stdin, no value); failures are logged, the rotation stands.
    #[arg(long, value_name = "SERVICE", requires = "command")]
    pub post_rotate_exec: Option<String>,
    /// The user (`USER[:GROUP]`, or uid[:gid]) an exec hook runs as [default: the container's].
    #[arg(long, value_name = "USER")]
    pub exec_user: Option<String>,
    /// Time limit of the hook(s) set by this command (each replica, for an
    /// exec hook), 100ms..10m [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_hook_timeout)]
    pub timeout: Option<u64>,
    /// Remove the pre-rotate hook.
    #[arg(long, conflicts_with_all = ["pre_rotate", "pre_rotate_exec"])]
    pub no_pre_rotate: bool,
    /// Remove the post-rotate hook.
    #[arg(long, conflicts_with_all = ["post_rotate", "post_rotate_exec"])]
    pub no_post_rotate: bool,
    /// The exec hook's program and arguments (run without a shell).
    #[arg(last = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

impl HookArgs {
    /// The change asked for, or why it makes no sense.
    pub fn change(self) -> Result<Option<SetHooks>> {
        let exec_set = self.pre_rotate_exec.is_some() || self.post_rotate_exec.is_some();
        if !exec_set && (!self.command.is_empty() || self.exec_user.is_some()) {
            bail!("a command after `--` and --exec-user belong to --pre-rotate-exec or --post-rotate-exec SERVICE");
        }
        let changing = exec_set
            || self.pre_rotate.is_some()
            || self.post_rotate.is_some()
            || self.no_pre_rotate
            || self.no_post_rotate;
        if !changing {
            if self.timeout.is_some() {
                bail!("--timeout applies to a hook set in the same command: add --pre-rotate CMD or --post-rotate CMD");
            }
            return Ok(None);
        }
        let timeout_ms = self.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT_MS);
        let host = |command: String| HookSpec { command, timeout_ms, exec: None };
        let (argv, user) = (self.command, self.exec_user);
        let exec = |service: String| {
            let e = ExecHook { service, argv: argv.clone(), user: user.clone() };
            HookSpec { command: e.shown(), timeout_ms, exec: Some(e) }
        };
        Ok(Some(SetHooks {
            pre_rotate: self.pre_rotate.map(host).or_else(|| self.pre_rotate_exec.map(exec)),
            post_rotate: self.post_rotate.map(host).or_else(|| self.post_rotate_exec.map(exec)),
            clear_pre_rotate: self.no_pre_rotate,
            clear_post_rotate: self.no_post_rotate,
        }))
    }
}

pub async fn hook(client: &AdminClient, name: &SecretName, a: HookArgs, output: Output) -> Result<()> {
    let path = format!("/v1/secrets/{name}/hooks");
    let hooks: Hooks = match a.change()? {
        Some(change) => {
            if let Some(problem) =
                [&change.pre_rotate, &change.post_rotate].into_iter().flatten().find_map(HookSpec::problem)
            {
                bail!("cannot set the hooks of {name}: {problem}");
            }
            client
                .call("PUT", &path, Some(&change))
                .await
                .with_context(|| format!("cannot set the hooks of {name}"))?
        }
        None => client.get(&path).await.with_context(|| format!("cannot read the hooks of {name}"))?,
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&hooks)?),
        Output::Table => print!("{}", hooks_table(name, &hooks)),
    }
    Ok(())
}

pub fn hooks_table(name: &SecretName, hooks: &Hooks) -> String {
    let show = |h: &Option<HookSpec>| match h {
        Some(h) => {
            let user = h
                .exec
                .as_ref()
                .and_then(|e| e.user.as_deref())
                .map(|u| format!(", as {u}"))
                .unwrap_or_default();
            format!("{} (timeout {}{user})", h.command, format_ms(h.timeout_ms))
        }
        None => "-".into(),
    };
    format!(
        "{name}\n  pre-rotate   {}\n  post-rotate  {}\n",
        show(&hooks.pre_rotate),
        show(&hooks.post_rotate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::secret::{SecretArgs, SecretCmd};
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SecretArgs,
    }

    fn parse(args: &[&str]) -> Result<HookArgs, clap::Error> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        let SecretCmd::Hook { args, .. } = t.s.cmd else { panic!("not a hook command") };
        Ok(args)
    }

    #[test]
    fn hooks_show_command_and_timeout() {
        let hooks = Hooks {
            pre_rotate: Some(HookSpec {
                command: "psql -f rotate.sql".into(),
                timeout_ms: 30_000,
                exec: None,
            }),
            post_rotate: None,
        };
        let text = hooks_table(&SecretName::parse("db").unwrap(), &hooks);
        assert_eq!(text, "db\n  pre-rotate   psql -f rotate.sql (timeout 30s)\n  post-rotate  -\n");
    }

    #[test]
    fn hook_flags_conflict_sensibly() {
        assert!(parse(&["hook", "db", "--pre-rotate", "true", "--timeout", "5s"]).is_ok());
        assert!(parse(&["hook", "db", "--pre-rotate", "true", "--no-pre-rotate"]).is_err());
        assert!(parse(&["hook", "db", "--no-pre-rotate", "--post-rotate", "x"]).is_ok());
        assert!(parse(&["hook", "db", "--pre-rotate-exec", "db"]).is_err(), "needs a command");
        assert!(
            parse(&["hook", "db", "--pre-rotate-exec", "db", "--post-rotate-exec", "w", "--", "x"]).is_err()
        );
        assert!(parse(&["hook", "db", "--pre-rotate", "x", "--pre-rotate-exec", "db", "--", "x"]).is_err());
        assert!(parse(&["hook", "db", "--pre-rotate", "x", "--", "y"]).unwrap().change().is_err());
        assert!(parse(&["hook", "db", "--timeout", "5s"]).unwrap().change().is_err());
        assert!(parse(&["hook", "db"]).unwrap().change().unwrap().is_none());
        assert!(parse_hook_timeout("50ms").is_err());
        assert_eq!(parse_hook_timeout("10m"), Ok(600_000));
    }

    #[test]
    fn an_exec_hook_keeps_its_argv_apart_from_the_service() {
        let args = [
            "hook",
            "db-password",
            "--pre-rotate-exec",
            "shop/db",
            "--exec-user",
            "postgres",
            "--timeout",
            "10s",
        ];
        let all: Vec<&str> = args.iter().copied().chain(["--", "psql", "-f", "-", "--quiet"]).collect();
        let change = parse(&all).unwrap().change().unwrap().unwrap();
        let spec = change.pre_rotate.unwrap();
        let exec = spec.exec.clone().unwrap();
        assert_eq!((exec.service.as_str(), exec.user.as_deref()), ("shop/db", Some("postgres")));
        assert_eq!(exec.argv, ["psql", "-f", "-", "--quiet"]);
        assert_eq!((spec.timeout_ms, spec.command.as_str()), (10_000, "exec in shop/db: psql -f - --quiet"));
        assert!(change.post_rotate.is_none() && spec.problem().is_none());
        let text = hooks_table(
            &SecretName::parse("db").unwrap(),
            &Hooks { pre_rotate: Some(spec), post_rotate: None },
        );
        assert!(text.contains("exec in shop/db: psql -f - --quiet (timeout 10s, as postgres)"), "{text}");
    }
}
