//! The admin-socket client behind every `segctl` admin command and
//! `segctl audit`: one HTTP request per call over `<run>/admin.sock`, JSON in
//! and out, secret values as raw bodies read straight into [`SecretBytes`].

use crate::cluster::remote::Endpoint;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use seg_common::api::ApiError;
use seg_common::name::MAX_VALUE_LEN;
use seg_common::secret::SecretBytes;
use seg_common::uds_http::{self, ClientError, Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A store write may wait on fsync; keep the bound generous but finite.
const TIMEOUT: Duration = Duration::from_secs(30);
/// JSON answers (e.g. the list of every secret) stay well below this.
const MAX_JSON: usize = 16 * 1024 * 1024;

/// Where the controller's admin API is: the local admin socket, or a
/// node's cluster endpoint with an admin certificate; shared by all admin
/// commands.
#[derive(Debug, Clone, Args)]
pub struct AdminOpts {
    /// Run directory of the controller (holds admin.sock).
    #[arg(long, global = true, env = "SEG_RUN_DIR", default_value = "/run/seg", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// A node's cluster endpoint (`https://HOST:PORT`) instead of the local
    /// admin socket; needs --admin-dir.
    #[arg(long, global = true, env = "SEG_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Directory of an admin certificate (`segctl cluster admin-cert --out
    /// DIR`: ca.crt, admin.crt, admin.key), for --server.
    #[arg(long, global = true, env = "SEG_ADMIN_DIR", value_name = "DIR")]
    pub admin_dir: Option<PathBuf>,
}

impl AdminOpts {
    /// The local socket's client, or (with --server) a remote one.
    pub fn client(&self) -> AdminClient {
        AdminClient { to: self.target(), socket: self.run_dir.join("admin.sock") }
    }

    fn target(&self) -> Target {
        let Some(server) = &self.server else { return Target::Local };
        let remote = || -> Result<Remote> {
            let endpoint = Endpoint::parse(server)?;
            let dir = self.admin_dir.as_ref().ok_or_else(|| {
                anyhow!("--server needs --admin-dir DIR (or SEG_ADMIN_DIR): the admin certificate `segctl cluster admin-cert --out DIR` wrote")
            })?;
            let config = crate::cluster::remote::admin_config(dir)?;
            Ok(Remote { endpoint, config })
        };
        // Reported on the first request, like an unreachable socket.
        Target::Remote(remote().map_err(|e| format!("{e:#}")))
    }
}

enum Target {
    Local,
    Remote(Result<Remote, String>),
}

struct Remote {
    endpoint: Endpoint,
    config: std::sync::Arc<rustls::ClientConfig>,
}

pub struct AdminClient {
    to: Target,
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(run_dir: &Path) -> AdminClient {
        AdminClient { to: Target::Local, socket: run_dir.join("admin.sock") }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where requests go, for messages.
    pub fn describe(&self) -> String {
        match &self.to {
            Target::Local => self.socket.display().to_string(),
            Target::Remote(Ok(r)) => r.endpoint.url.clone(),
            Target::Remote(Err(_)) => "(--server)".into(),
        }
    }

    async fn send(&self, req: &Request<'_>, max_body: usize) -> Result<Response> {
        self.send_within(req, max_body, TIMEOUT).await
    }

    async fn send_within(&self, req: &Request<'_>, max_body: usize, timeout: Duration) -> Result<Response> {
        let resp = match &self.to {
            Target::Local => {
                uds_http::send(&self.socket, req, timeout, max_body).await.map_err(|e| self.explain(e))?
            }
            Target::Remote(Ok(r)) => r.endpoint.send(r.config.clone(), req, timeout, max_body).await?,
            Target::Remote(Err(e)) => bail!("{e}"),
        };
        if resp.is_success() {
            return Ok(resp);
        }
        match resp.json::<ApiError>() {
            Ok(err) => bail!("{}", err.error),
            Err(_) => bail!("the controller answered HTTP {} without an explanation", resp.status),
        }
    }

    fn explain(&self, err: ClientError) -> anyhow::Error {
        let sock = self.socket.display();
        match err {
            ClientError::Connect { cause, .. } if cause.kind() == std::io::ErrorKind::PermissionDenied => anyhow!(
                "cannot reach the seg controller at {sock}: {cause}. The admin socket is root-only: run segctl as root."
            ),
            ClientError::Connect { cause, .. } => anyhow!(
                "cannot reach the seg controller at {sock}: {cause}. Start it with `segctl node run` \
                 (or point --run-dir / SEG_RUN_DIR at its run directory)."
            ),
            other => anyhow!("{other}"),
        }
    }

    /// A JSON request with an optional JSON body.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).context("cannot encode the request")?,
            None => Vec::new(),
        };
        let req = Request { method, path, content_type: "application/json", body: &bytes };
        let resp = self.send(&req, MAX_JSON).await?;
        resp.json().with_context(|| format!("unexpected answer from the controller to {method} {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(method::GET, path, None::<&()>).await
    }

    /// Sends a secret value as the raw body of a PUT.
    pub async fn put_value<T: DeserializeOwned>(&self, path: &str, value: &SecretBytes) -> Result<T> {
        self.send_value("PUT", path, value).await
    }

    /// Sends a secret value as the raw body of a request. Allows for a
    /// pre-rotate hook that takes up to its 10-minute limit.
    pub async fn send_value<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        value: &SecretBytes,
    ) -> Result<T> {
        let req = Request { method, path, content_type: "application/octet-stream", body: value.expose() };
        let timeout = Duration::from_millis(seg_common::api::MAX_HOOK_TIMEOUT_MS) + TIMEOUT;
        let resp = self.send_within(&req, MAX_JSON, timeout).await?;
        resp.json().with_context(|| format!("unexpected answer from the controller to {method} {path}"))
    }

    /// A GET that may take up to `timeout` (a status request that waits).
    pub async fn get_within<T: DeserializeOwned>(&self, path: &str, timeout: Duration) -> Result<T> {
        let resp = self.send_within(&Request::get(path), MAX_JSON, timeout).await?;
        resp.json().with_context(|| format!("unexpected answer from the controller to GET {path}"))
    }

    /// Reads a secret value; returns it with its version.
    pub async fn get_value(&self, path: &str) -> Result<(SecretBytes, u64)> {
        let resp = self.send(&Request::get(path), MAX_VALUE_LEN).await?;
        let version = resp.header(seg_common::api::HDR_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((resp.body, version))
    }
}

pub mod method {
    pub const GET: &str = "GET";
    pub const PUT: &str = "PUT";
    pub const POST: &str = "POST";
    pub const DELETE: &str = "DELETE";
}

/// What [`encode`] leaves as it is: RFC 3986's unreserved characters and `/`.
const PATH_SAFE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, PATH_SAFE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_controller_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let client = AdminClient::new(dir.path());
        let err = client.get::<serde_json::Value>("/v1/status").await.unwrap_err().to_string();
        assert!(err.contains("cannot reach the seg controller at"), "{err}");
        assert!(err.contains("admin.sock") && err.contains("Start it with `segctl node run`"), "{err}");
    }
}
