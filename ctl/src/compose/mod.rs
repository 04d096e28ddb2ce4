//! `segctl compose`: a compose file with `x-seg.secrets` in, the override
//! file that delivers those secrets out. Pure (text in, text out), so the
//! output is golden-tested.
//!
//! Per service that gets secrets the override adds a sidecar service
//! `<svc>-secrets` (labelled `seg.for: <svc>`, hardened, healthchecked,
//! with the agent socket directory mounted read-only), a tmpfs volume
//! `<svc>-secrets` owned by the app's own `user:`, and to the app itself a
//! `depends_on` on the sidecar being healthy and the volume mounted `:ro`
//! at `/run/secrets`. The YAML is what docker-compose 1.29 (v1) and the
//! compose spec (v2) both read: `docker-compose -f app.yml -f app.seg.yml`.

mod users;

pub use users::{parse_user, User};

use crate::policy::{self, FileMode, PolicyError};
use serde::de::DeserializeSeed;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Where the sidecar looks for the agent socket (its default `SEG_AGENT_SOCKET`'s directory).
pub const AGENT_MOUNT: &str = "/run/seg/agent";
/// Where the app (and its sidecar) see the secrets.
pub const SECRETS_DIR: &str = "/run/secrets";
/// The sidecar image `scripts/build-images` builds.
pub const DEFAULT_IMAGE: &str = "seg-sidecar:dev";

/// What the generated file depends on besides the compose file.
#[derive(Clone, Debug)]
pub struct Options {
    /// The controller's agent socket directory on the host (`<run-dir>/agent`).
    pub agent_dir: String,
    /// The sidecar image.
    pub image: String,
    /// The compose file as the user named it (in the header and messages).
    pub file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{file}: `x-seg:` has no `secrets:`, so there is nothing to generate; declare e.g. `secrets: {{ db-password: {{ to: [app] }} }}` under it")]
    NoSecrets { file: String },
    #[error("{file}: the generator would add {what} `{name}`, but the file has one already; rename yours")]
    Taken { file: String, what: &'static str, name: String },
    #[error(
        "{file}: the agent directory {dir:?} must be an absolute path without `:` (it becomes a bind mount)"
    )]
    BadAgentDir { file: String, dir: String },
}

/// One service that gets secrets, as the override writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub service: String,
    pub secrets: Vec<String>,
    pub mode: FileMode,
    pub user: User,
}

impl Delivery {
    pub fn sidecar(&self) -> String {
        format!("{}-secrets", self.service)
    }

    /// The tmpfs's own mode: the group or others may enter only if the
    /// files' mode lets them read.
    fn dir_mode(&self) -> &'static str {
        match (self.mode.0 & 0o040 != 0, self.mode.0 & 0o004 != 0) {
            (_, true) => "0755",
            (true, false) => "0750",
            _ => "0700",
        }
    }
}

/// Reads `x-seg.secrets` and the users of the services it names.
pub fn plan(text: &str, opts: &Options) -> Result<Vec<Delivery>, ComposeError> {
    let parsed = policy::parse_compose(text, &opts.file, None)?;
    if parsed.secrets.is_empty() {
        return Err(ComposeError::NoSecrets { file: opts.file.clone() });
    }
    let by_service = parsed.secrets.by_service();
    let need: BTreeSet<String> = by_service.keys().cloned().collect();
    let de = serde_norway::Deserializer::from_str(text);
    let layout = users::LayoutSeed { need: &need }
        .deserialize(de)
        .map_err(|e| PolicyError::from_yaml(&opts.file, &e))?;
    let mut out = Vec::new();
    for (service, (names, mode)) in by_service {
        let user = layout.users[&service];
        let secrets = names.iter().map(|n| parsed.secrets.0[n].sidecar_entry(n)).collect();
        let d = Delivery { service, secrets, mode, user };
        let taken = |what, name: String| ComposeError::Taken { file: opts.file.clone(), what, name };
        if layout.services.contains(&d.sidecar()) {
            return Err(taken("the service", d.sidecar()));
        }
        if layout.volumes.contains(&d.sidecar()) {
            return Err(taken("the volume", d.sidecar()));
        }
        out.push(d);
    }
    Ok(out)
}

/// The override file for `text`.
pub fn generate(text: &str, opts: &Options) -> Result<String, ComposeError> {
    if !opts.agent_dir.starts_with('/') || opts.agent_dir.contains(':') {
        return Err(ComposeError::BadAgentDir { file: opts.file.clone(), dir: opts.agent_dir.clone() });
    }
    let deliveries = plan(text, opts)?;
    Ok(render(&deliveries, opts))
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn render(deliveries: &[Delivery], opts: &Options) -> String {
    let mut out = String::new();
    let file = std::path::Path::new(&opts.file).file_name().map(|n| n.to_string_lossy().into_owned());
    let file = file.unwrap_or_else(|| opts.file.clone());
    let _ = writeln!(out, "# Generated by `segctl compose` from {file} -- do not edit: run it again after");
    out.push_str("# changing `x-seg.secrets` or the `user:` of a service that gets secrets. Use:\n");
    let _ = writeln!(out, "#   docker-compose -f {file} -f THIS_FILE up -d");
    out.push_str("services:\n");
    for d in deliveries {
        render_app(&mut out, d);
        render_sidecar(&mut out, d, opts);
    }
    out.push_str("volumes:\n");
    for d in deliveries {
        let _ = writeln!(out, "  {}:", d.sidecar());
        out.push_str("    driver_opts:\n      type: tmpfs\n      device: tmpfs\n");
        let gid = d.user.gid.map(|g| format!(",gid={g}")).unwrap_or_default();
        let o = format!("size=1m,uid={}{gid},mode={}", d.user.uid, d.dir_mode());
        let _ = writeln!(out, "      o: {}", q(&o));
    }
    out
}

fn render_app(out: &mut String, d: &Delivery) {
    let _ = writeln!(out, "  {}:", d.service);
    let _ = writeln!(out, "    depends_on:\n      {}:\n        condition: service_healthy", d.sidecar());
    let _ = writeln!(out, "    volumes:\n      - {}", q(&format!("{}:{SECRETS_DIR}:ro", d.sidecar())));
}

fn render_sidecar(out: &mut String, d: &Delivery, opts: &Options) {
    let _ = writeln!(out, "  {}:", d.sidecar());
    let _ = writeln!(out, "    image: {}", q(&opts.image));
    let _ = writeln!(out, "    labels:\n      seg.for: {}", q(&d.service));
    let _ = writeln!(out, "    user: {}", q(&d.user.to_string()));
    out.push_str(concat!(
        "    read_only: true\n",
        "    cap_drop: [\"ALL\"]\n",
        "    security_opt: [\"no-new-privileges:true\"]\n",
        "    network_mode: \"none\"\n",
        "    environment:\n",
    ));
    let _ = writeln!(out, "      SEG_SECRETS: {}", q(&d.secrets.join(",")));
    let _ = writeln!(out, "      SEG_DIR: {}", q(SECRETS_DIR));
    let _ = writeln!(out, "      SEG_MODE: {}", q(&d.mode.to_string()));
    out.push_str("    volumes:\n");
    let _ = writeln!(out, "      - {}", q(&format!("{}:{SECRETS_DIR}", d.sidecar())));
    let _ = writeln!(out, "      - {}", q(&format!("{}:{AGENT_MOUNT}:ro", opts.agent_dir)));
    out.push_str(concat!(
        "    ulimits:\n",
        "      memlock:\n",
        "        soft: 1048576\n",
        "        hard: 1048576\n",
        "    healthcheck:\n",
        "      test: [\"CMD\", \"/seg-sidecar\", \"health\"]\n",
        "      interval: 1s\n",
        "      timeout: 2s\n",
        "      retries: 3\n",
        "      start_period: 30s\n",
    ));
}

#[cfg(test)]
mod tests;
