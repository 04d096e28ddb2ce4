//! `segctl secret …`: manage secrets on the controller. Values never reach
//! argv, the environment or the terminal by accident: they come from a
//! file, stdin or the random generator, and `get` refuses a TTY stdout.
//! `rotate` and `status` are implemented in [`super::rotation`], `hook` in
//! [`super::hook`].

use super::duration::{format_ms, parse_ttl};
use super::hook::{self, HookArgs};
use super::rotation::{self, parse_grace, parse_wait, RotateOpts};
use super::{input, AdminOpts, Output};
use crate::client::method::{DELETE, POST, PUT};
use crate::client::AdminClient;
use crate::table::Table;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use seg_common::api::ChangeResult;
use seg_common::api::{GrantTarget, PutResult, SecretInfo, TtlRequest};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    #[command(flatten)]
    pub admin: AdminOpts,
    #[command(subcommand)]
    pub cmd: SecretCmd,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SecretCmd {
    /// Store a new version of a secret (creates it if needed).
    Put {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
        #[command(flatten)]
        source: ValueSource,
        /// Lease TTL for readers, e.g. 30s, 5m, 1h (1s..24h) [default: keep, or 5m for a new secret].
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u64>,
    },
    /// List secrets: versions, lease TTLs and grants (never values).
    Ls {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write the current value to stdout, as raw bytes.
    Get {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
        /// Write even when stdout is a terminal.
        #[arg(long)]
        force: bool,
    },
    /// Remove a secret and all its versions.
    Rm {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
    },
    /// Let a service read a secret: PROJECT/SERVICE, */SERVICE or SERVICE.
    Grant {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
        #[arg(long, value_name = "[PROJECT/]SERVICE", value_parser = parse_target)]
        to: GrantTarget,
    },
    /// Withdraw a grant made with `grant` (the same target spelling).
    Revoke {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
        #[arg(long, value_name = "[PROJECT/]SERVICE", value_parser = parse_target)]
        from: GrantTarget,
    },
    /// Change the lease TTL readers get, e.g. 30s, 5m, 1h (1s..24h).
    Ttl {
        /// Secret name: 1-128 of a-z 0-9 . _ - (starting with a letter or digit).
        name: SecretName,
        #[arg(value_name = "DURATION", value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Store a new version and push it to every running consumer now (after
    /// the pre-rotate hook, if any, accepted it).
    Rotate {
        /// Secret name (it must exist; create it with `put`).
        name: SecretName,
        #[command(flatten)]
        source: ValueSource,
        /// Lease TTL for readers, e.g. 5m [default: keep].
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// The longest the previous version stays readable, e.g. 0s, 5m; it
        /// ends sooner once every consumer has the new version [default: 10m].
        #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
        grace: Option<u64>,
        /// Return only when every consumer has the new version on disk; exit
        /// 1 naming those that do not by the timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits [default: 30s].
        #[arg(long, value_name = "DURATION", value_parser = parse_wait, requires = "wait")]
        timeout: Option<u64>,
    },
    /// Show every consumer of a secret: container, service, the version it
    /// has on disk and when it said so.
    Status {
        /// Secret name.
        name: SecretName,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show or set the rotation hooks of a secret: commands run on this
    /// host, or inside the running containers of a service (`--…-exec`).
    #[command(after_help = hook::HOOK_EXAMPLES)]
    Hook {
        /// Secret name.
        name: SecretName,
        #[command(flatten)]
        args: HookArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// Where `put` and `rotate` take the value from: exactly one of these.
#[derive(Debug, Clone, Args)]
#[group(id = "source", required = true, multiple = false)]
pub struct ValueSource {
    /// Read the value from this file (at most 512 KiB).
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// Read the value from standard input, until EOF (at most 512 KiB).
    #[arg(long)]
    from_stdin: bool,
    /// Generate a random value of N characters from [A-Za-z0-9].
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
}

impl ValueSource {
    fn read(self) -> Result<SecretBytes> {
        let value = match self {
            ValueSource { from_file: Some(f), .. } => input::from_file(&f)?,
            ValueSource { from_stdin: true, .. } => input::from_stdin()?,
            ValueSource { generate: Some(n), .. } => input::generate(n)?,
            _ => bail!("give one of --from-file, --from-stdin or --generate"),
        };
        if value.is_empty() {
            bail!("the value is empty; refusing to store an empty secret");
        }
        Ok(value)
    }
}

pub fn parse_target(raw: &str) -> Result<GrantTarget, String> {
    GrantTarget::parse(raw).map_err(|e| format!("{e} (write PROJECT/SERVICE, */SERVICE or SERVICE)"))
}

fn path(name: &SecretName, suffix: &str) -> String {
    format!("/v1/secrets/{name}{suffix}")
}

pub async fn run(args: SecretArgs) -> Result<()> {
    let client = args.admin.client();
    match args.cmd {
        SecretCmd::Put { name, source, ttl } => {
            let value = source.read()?;
            let query = ttl.map(|t| format!("?ttl_ms={t}")).unwrap_or_default();
            let put: PutResult = client
                .put_value(&path(&name, &query), &value)
                .await
                .with_context(|| format!("cannot store secret {name}"))?;
            println!("stored secret {} version {}", put.name, put.version);
        }
        SecretCmd::Ls { output } => {
            let infos: Vec<SecretInfo> = client.get("/v1/secrets").await.context("cannot list secrets")?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&infos)?),
                Output::Table => print!("{}", table(&infos)),
            }
        }
        SecretCmd::Get { name, force } => get(&client, name, force).await?,
        SecretCmd::Rm { name } => {
            change(&client, DELETE, &name, "", None::<&()>, "cannot remove secret").await?;
            println!("removed secret {name}");
        }
        SecretCmd::Grant { name, to } => {
            let changed = change(&client, POST, &name, "/grants", Some(&to), "cannot grant").await?;
            println!("{name}: {} to {to}", if changed { "granted" } else { "already granted" });
        }
        SecretCmd::Revoke { name, from } => {
            if !change(&client, DELETE, &name, "/grants", Some(&from), "cannot revoke").await? {
                bail!("secret {name} has no grant for {from}; nothing revoked (see `segctl secret ls` for its grants)");
            }
            println!("{name}: revoked from {from}");
        }
        SecretCmd::Ttl { name, ttl } => {
            let body = TtlRequest { ttl_ms: ttl };
            change(&client, PUT, &name, "/ttl", Some(&body), "cannot change the lease TTL of").await?;
            println!("{name}: lease TTL is now {}", format_ms(ttl));
        }
        SecretCmd::Rotate { name, source, ttl, grace, wait, timeout } => {
            let value = source.read()?;
            let wait_ms = wait.then(|| timeout.unwrap_or(rotation::DEFAULT_WAIT_MS));
            rotation::rotate(&client, &name, &value, RotateOpts { ttl_ms: ttl, grace_ms: grace, wait_ms })
                .await?;
        }
        SecretCmd::Status { name, output } => rotation::status(&client, &name, output).await?,
        SecretCmd::Hook { name, args, output } => hook::hook(&client, &name, args, output).await?,
    }
    Ok(())
}

async fn get(client: &AdminClient, name: SecretName, force: bool) -> Result<()> {
    if !force && std::io::stdout().is_terminal() {
        bail!(
            "refusing to print secret {name} to a terminal; redirect stdout (e.g. `> file`) or pass --force"
        );
    }
    let (value, _) =
        client.get_value(&path(&name, "")).await.with_context(|| format!("cannot read secret {name}"))?;
    write_stdout(&value).context("cannot write the value to stdout")
}

/// One mutating call; returns whether the controller changed anything.
async fn change(
    client: &AdminClient,
    method: &str,
    name: &SecretName,
    suffix: &str,
    body: Option<&impl serde::Serialize>,
    failed: &str,
) -> Result<bool> {
    let done: ChangeResult =
        client.call(method, &path(name, suffix), body).await.with_context(|| format!("{failed} {name}"))?;
    Ok(done.changed)
}

/// Writes straight to fd 1: std's stdout buffer would keep a copy.
fn write_stdout(value: &SecretBytes) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let mut rest = value.expose();
    while !rest.is_empty() {
        match rustix::io::write(stdout.as_fd(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub fn table(infos: &[SecretInfo]) -> String {
    if infos.is_empty() {
        return "no secrets yet; add one with `segctl secret put NAME --from-file FILE`\n".into();
    }
    let mut table = Table::new(2).header(["NAME", "VERSION", "TTL", "UPDATED", "GRANTS"]);
    for i in infos {
        let grants = if i.grants.is_empty() { "-".to_owned() } else { i.grants.join(",") };
        table.row([
            i.name.to_string(),
            i.version.to_string(),
            format_ms(i.ttl_ms),
            crate::timefmt::rfc3339(i.updated_at),
            grants,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SecretArgs,
    }

    fn parse(args: &[&str]) -> Result<SecretArgs, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.s)
    }

    #[test]
    fn grant_targets_parse_all_three_forms() {
        for (raw, shown) in [("shop/app", "shop/app"), ("*/app", "*/app"), ("app", "app")] {
            let args = parse(&["grant", "db", "--to", raw]).unwrap();
            let SecretCmd::Grant { to, .. } = args.cmd else { panic!() };
            assert_eq!(to.to_string(), shown);
        }
        let err = parse(&["grant", "db", "--to", "a/b/c"]).unwrap_err().to_string();
        assert!(err.contains("PROJECT/SERVICE"), "{err}");
    }

    #[test]
    fn put_needs_exactly_one_source_and_a_valid_name() {
        assert!(parse(&["put", "db", "--generate", "32", "--ttl", "5m"]).is_ok());
        assert!(parse(&["put", "db"]).is_err());
        assert!(parse(&["put", "db", "--from-stdin", "--generate", "3"]).is_err());
        let err = parse(&["put", "Bad/Name", "--from-stdin"]).unwrap_err().to_string();
        assert!(err.contains("must start with a lowercase letter"), "{err}");
        let err = parse(&["put", "db", "--from-stdin", "--ttl", "5"]).unwrap_err().to_string();
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn run_dir_is_accepted_after_the_subcommand() {
        let args = parse(&["ls", "--run-dir", "/tmp/x"]).unwrap();
        assert_eq!(args.admin.run_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn table_has_no_values_and_aligns() {
        let info = SecretInfo {
            name: SecretName::parse("db").unwrap(),
            version: 3,
            ttl_ms: 300_000,
            grants: vec!["shop/app".into(), "*/web".into()],
            created_at: 0,
            updated_at: 0,
        };
        let text = table(&[info]);
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("NAME  VERSION  TTL  UPDATED"), "{text}");
        assert!(lines[1].contains("5m") && lines[1].ends_with("shop/app,*/web"), "{text}");
        assert!(table(&[]).contains("no secrets yet"));
    }
}
