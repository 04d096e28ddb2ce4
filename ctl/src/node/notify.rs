//! Post-rotate actions, run by the controller when a sidecar reports that
//! files changed (`POST /v1/notify`). The sidecar only names the action; the
//! controller decides what it reaches:
//!
//! - `signal:SIG` — the running containers of the sidecar's own service (or
//!   `target`, another service of the same project that consented), never a
//!   sidecar, and only the reload signals of
//!   [`seg_common::api::ALLOWED_SIGNALS`];
//! - `http://SERVICE[:PORT]/PATH` — a POST of names and versions to a
//!   container of that service (the caller's own, or one that consented; no
//!   other host can be named, so a sidecar cannot make the controller call
//!   anywhere else);
//!
//! A caller reaches its own service only, unless the other service's
//! containers consent with the label `seg.notify-from: <caller's service>`:
//! the containers that can be signalled are decided by whoever started
//! them, never by the caller. (Standalone identities have no project: without
//! this rule any of them could signal any other.)
//! - `command` — the post-rotate command the operator registered on each
//!   changed secret: a sidecar can trigger it but never choose it.

use super::access_log::{HookLog, Socket};
use super::hooks::{self, Input};
use super::http::Failure;
use super::rotation_state::{shorten, AppContainer, HookRecord, RotationState};
use super::{read_store, store_failure};
use crate::attest::Attested;
use crate::store::SecretStore;
use hyper::StatusCode;
use seg_common::api::{
    validate_label, Changed, HttpTarget, Identity, NotifyRequest, NotifyResult, PostRotate,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest time an HTTP post-rotate call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most secrets one notification may name.
const MAX_SECRETS: usize = 256;

/// One thing done: what it reached, how it went, whether it worked.
struct Done {
    /// The secrets it was done for.
    about: Vec<Changed>,
    target: String,
    status: String,
    ok: bool,
    millis: u64,
}

pub async fn notify(
    store: &Arc<dyn SecretStore>,
    rotation_state: &RotationState,
    who: &Attested,
    req: NotifyRequest,
) -> Result<NotifyResult, Failure> {
    let action = PostRotate::parse(&req.action)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_action", e.to_string()))?;
    if req.secrets.is_empty() || req.secrets.len() > MAX_SECRETS {
        return Err(Failure::bad_request(format!("name 1 to {MAX_SECRETS} changed secrets")));
    }
    let hooks = granted_hooks(store, who, &req.secrets).await?;
    if !rotation_state.allow_notify(&who.container_id) {
        let msg = "too many post-rotate notifications from this container; wait a second";
        return Err(Failure::new(StatusCode::TOO_MANY_REQUESTS, "too_many_notifications", msg));
    }
    let target = target_service(who, req.target.as_deref())?;
    let done = match &action {
        PostRotate::Signal(sig) => signal(rotation_state, who, &target, sig, &req.secrets).await?,
        PostRotate::Http(h) => vec![http(rotation_state, who, h, &req.secrets).await?],
        PostRotate::Command => commands(who, &req.secrets, hooks).await,
    };
    let summary: Vec<String> = done.iter().map(|d| format!("{} {}", d.target, d.status)).collect();
    rotation_state.consumers.note_hook(&who.container_id, format!("{action}: {}", summary.join(", ")));
    for d in &done {
        for c in &d.about {
            let hook = HookLog {
                kind: "post-rotate",
                action: action.to_string(),
                target: d.target.clone(),
                container: None,
                status: d.status.clone(),
                duration_ms: d.millis,
            };
            let record = HookRecord {
                socket: Socket::Agent,
                secret: &c.name,
                version: c.version,
                attempted: false,
                who: Some(who),
                hook,
                ok: d.ok,
            };
            rotation_state.log_hook(record);
        }
    }
    if !done.is_empty() && done.iter().all(|d| !d.ok) {
        let msg = format!("the post-rotate action {action} failed: {}", summary.join("; "));
        return Err(Failure::new(StatusCode::BAD_GATEWAY, "hook_failed", msg));
    }
    Ok(NotifyResult { action: action.to_string(), targets: done.into_iter().map(|d| d.target).collect() })
}

/// Checks the caller may read every named secret; returns their
/// post-rotate commands (for `command`).
async fn granted_hooks(
    store: &Arc<dyn SecretStore>,
    who: &Attested,
    secrets: &[Changed],
) -> Result<Vec<(Changed, Option<seg_common::api::HookSpec>)>, Failure> {
    let mut out = Vec::new();
    for c in secrets {
        let n = c.name.clone();
        let meta = read_store(store, |s| s.meta(&n));
        let granted = match meta {
            Ok(m) if m.grants.iter().any(|g| g.matches(&who.identity)) => m,
            Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
                let msg = format!(
                    "{} may not read secret {} (not granted, or no such secret)",
                    who.identity, c.name
                );
                return Err(Failure::new(StatusCode::FORBIDDEN, "not_granted", msg));
            }
            Err(e) => return Err(store_failure(e)),
        };
        out.push((c.clone(), granted.hooks.post_rotate));
    }
    Ok(out)
}

/// The service an action is aimed at: the caller's own, or `target`.
fn target_service(who: &Attested, target: Option<&str>) -> Result<String, Failure> {
    match target {
        Some(t) => {
            validate_label("service", t)
                .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_target", e.to_string()))?;
            Ok(t.to_owned())
        }
        None => Ok(who.identity.service.clone()),
    }
}

/// The running app containers of `service` (in the caller's project) that
/// `who` may reach: all of its own service's, else those that consented.
async fn reachable(
    rotation_state: &RotationState,
    who: &Attested,
    service: &str,
) -> Result<Vec<AppContainer>, Failure> {
    let target = Identity { project: who.identity.project.clone(), service: service.to_owned() };
    let found = find(rotation_state, &target).await?;
    if service == who.identity.service {
        return Ok(found);
    }
    let caller = &who.identity.service;
    let consenting: Vec<AppContainer> =
        found.into_iter().filter(|c| c.notify_from.iter().any(|s| s == caller)).collect();
    if consenting.is_empty() {
        let msg = format!(
            "{} may only notify the containers of its own service; for service {target} to accept \
             post-rotate actions from it, label that service `seg.notify-from: {caller}`",
            who.identity
        );
        return Err(Failure::new(StatusCode::FORBIDDEN, "target_not_declared", msg));
    }
    Ok(consenting)
}

async fn find(rotation_state: &RotationState, target: &Identity) -> Result<Vec<AppContainer>, Failure> {
    let found = rotation_state.containers.find(target).await.map_err(|e| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "docker_unavailable",
            format!("cannot list the containers of {target}: {e}"),
        )
    })?;
    if found.is_empty() {
        let msg = format!("no running container of service {target} to notify");
        return Err(Failure::new(StatusCode::NOT_FOUND, "no_target", msg));
    }
    Ok(found)
}

async fn signal(
    rotation_state: &RotationState,
    who: &Attested,
    service: &str,
    sig: &str,
    secrets: &[Changed],
) -> Result<Vec<Done>, Failure> {
    let mut done = Vec::new();
    for c in reachable(rotation_state, who, service).await? {
        let started = Instant::now();
        let result = rotation_state.containers.signal(&c.id, sig).await;
        done.push(Done {
            about: secrets.to_vec(),
            target: format!("container {} ({})", seg_common::api::short_id(&c.id), c.name),
            status: match &result {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("failed: {e}"),
            },
            ok: result.is_ok(),
            millis: started.elapsed().as_millis() as u64,
        });
    }
    Ok(done)
}

async fn http(
    rotation_state: &RotationState,
    who: &Attested,
    h: &HttpTarget,
    secrets: &[Changed],
) -> Result<Done, Failure> {
    let containers = reachable(rotation_state, who, &h.service).await?;
    let Some(addr) = containers.iter().flat_map(|c| c.addresses.iter().copied()).next() else {
        let msg =
            format!("no container of service {} has a network address (network_mode: none?)", h.service);
        return Err(Failure::new(StatusCode::NOT_FOUND, "no_target", msg));
    };
    let body = serde_json::to_vec(&serde_json::json!({ "secrets": secrets })).unwrap_or_default();
    let host = format!("{}:{}", h.service, h.port);
    let started = Instant::now();
    let result = tokio::time::timeout(HTTP_TIMEOUT, post(addr, h.port, &host, &h.path, &body)).await;
    let status = match result {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", HTTP_TIMEOUT.as_secs())),
    };
    Ok(Done {
        about: secrets.to_vec(),
        target: format!("http://{host}{} ({addr})", shorten(&h.path)),
        ok: status.as_ref().is_ok_and(|c| (200..300).contains(c)),
        status: match status {
            Ok(code) => format!("HTTP {code}"),
            Err(e) => format!("failed: {e}"),
        },
        millis: started.elapsed().as_millis() as u64,
    })
}

/// One `POST` over plain HTTP/1.1; returns the status code.
async fn post(
    addr: std::net::IpAddr,
    port: u16,
    host: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let mut conn = tokio::net::TcpStream::connect((addr, port)).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: seg\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < 12 {
        match conn.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    code.filter(|_| line.starts_with("HTTP/1.")).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Runs the registered post-rotate command of each changed secret.
async fn commands(
    who: &Attested,
    changed: &[Changed],
    hooks: Vec<(Changed, Option<seg_common::api::HookSpec>)>,
) -> Vec<Done> {
    let mut done = Vec::new();
    for (c, spec) in hooks {
        // An exec hook is run by the controller after each rotation, not here.
        let Some(spec) = spec.filter(|s| s.exec.is_none()) else {
            let target = format!("{}: no post-rotate command registered", c.name);
            done.push(Done { about: vec![c], target, status: "skipped".into(), ok: true, millis: 0 });
            continue;
        };
        let event = serde_json::json!({
            "secret": c.name, "version": c.version, "container_id": who.container_id,
            "container_name": who.container_name, "identity": who.identity.to_string(), "changed": changed,
        });
        let env = [
            ("SEG_HOOK", "post-rotate".to_owned()),
            ("SEG_SECRET_NAME", c.name.to_string()),
            ("SEG_SECRET_VERSION", c.version.to_string()),
            ("SEG_CONTAINER_ID", who.container_id.clone()),
        ];
        let outcome = hooks::run(&spec, Input::Text(event.to_string().into_bytes()), &env).await;
        done.push(Done {
            about: vec![c],
            target: shorten(&spec.command),
            status: outcome.run.status,
            ok: outcome.ok,
            millis: outcome.run.duration_ms,
        });
    }
    done
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
