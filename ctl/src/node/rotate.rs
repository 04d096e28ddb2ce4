//! A rotation: run the pre-rotate hook with the new value, store the new
//! version, push it to every stream that follows the secret, open the grace
//! period of the previous version. `PUT /v1/secrets/{name}` on an existing
//! secret is a rotation with default options, so a hook cannot be bypassed.
//!
//! Nothing is distributed before the hook succeeded: a failing or hanging
//! hook leaves the store, the streams and every consumer untouched.
//!
//! A pre-rotate hook is a host command (`hooks.rs`) or an exec hook in the
//! containers of a service (`hook_exec.rs`). A post-rotate exec hook runs
//! after the rotation was distributed, once every consumer watching at
//! rotation time acknowledged the new version (or its timeout passed
//! waiting), in the background: the rotation's answer does not wait for it.

use super::access_log::{Entry, HookLog, Socket};
use super::consumers::now_ms;
use super::hook_exec::{self, Call};
use super::hooks::{self, HookResult, Input};
use super::http::Failure;
use super::rotation_state::{shorten, HookRecord, RotationState};
use super::{read_store, store_failure, with_store};
use crate::store::{SecretMeta, SecretStore, StoreError};
use hyper::StatusCode;
use seg_common::api::{ExecHook, HookRun, HookSpec, RotateResult, DEFAULT_GRACE_MS, MAX_GRACE_MS};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Rotation {
    pub name: SecretName,
    pub value: SecretBytes,
    pub ttl_ms: Option<u64>,
    /// The longest the previous version stays readable (it ends sooner
    /// once every consumer acknowledged the new one).
    pub grace: Duration,
    /// `rotate` needs an existing secret; `put` creates one.
    pub must_exist: bool,
}

/// The grace period of `?grace_ms=N` (default 10 min).
pub fn grace_policy(grace_ms: Option<u64>) -> Result<Duration, Failure> {
    match grace_ms.unwrap_or(DEFAULT_GRACE_MS) {
        ms if ms <= MAX_GRACE_MS => Ok(Duration::from_millis(ms)),
        _ => {
            Err(Failure::new(StatusCode::BAD_REQUEST, "bad_grace", "grace_ms is out of range: use 0 to 24h"))
        }
    }
}

pub async fn rotate(
    store: &Arc<dyn SecretStore>,
    rotation_state: &Arc<RotationState>,
    r: Rotation,
    entry: &mut Entry,
) -> Result<RotateResult, Failure> {
    let rotated_at_ms = now_ms();
    let _guard = rotation_state.lock_secret(&r.name).await;
    let before = current_meta(store, &r.name).await?;
    if before.is_none() && r.must_exist {
        let msg = format!("secret {} does not exist; create it with `segctl secret put`", r.name);
        return Err(Failure::new(StatusCode::NOT_FOUND, "not_found", msg));
    }
    let next = before.as_ref().map_or(1, |m| m.version + 1);
    let pre_rotate = match before.as_ref().and_then(|m| m.hooks.pre_rotate.clone()) {
        Some(spec) => Some(pre_rotate(rotation_state, &r, &spec, next, before.as_ref()).await?),
        None => None,
    };
    let (n, ttl) = (r.name.clone(), r.ttl_ms);
    let value = r.value;
    let version = with_store(store, move |s| s.put(&n, &value, ttl)).await?.map_err(store_failure)?;
    entry.version = Some(version);
    let after = current_meta(store, &r.name).await?;
    let consumers = rotation_state.publish(before.as_ref(), after.as_ref());
    let expected: BTreeSet<String> = match &after {
        Some(m) => rotation_state
            .hub
            .views()
            .into_iter()
            .filter(|w| w.follows(m))
            .map(|w| w.who.container_id)
            .collect(),
        None => BTreeSet::new(),
    };
    let previous = before.as_ref().map(|m| m.version);
    rotation_state.consumers.rotated(&r.name, previous, version, r.grace, expected, rotated_at_ms);
    if let Some(meta) = after.filter(|m| m.hooks.post_rotate.as_ref().is_some_and(|h| h.exec.is_some())) {
        tokio::spawn(post_rotate_exec(rotation_state.clone(), meta, previous));
    }
    entry.reason = format!("version {version} pushed to {consumers} stream(s)");
    Ok(RotateResult { name: r.name, version, previous, consumers, pre_rotate, rotated_at_ms })
}

async fn current_meta(
    store: &Arc<dyn SecretStore>,
    name: &SecretName,
) -> Result<Option<SecretMeta>, Failure> {
    let n = name.clone();
    match read_store(store, |s| s.meta(&n)) {
        Ok(m) => Ok(Some(m)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(store_failure(e)),
    }
}

/// Runs the hook with the new value on stdin; any failure aborts.
async fn pre_rotate(
    rotation_state: &RotationState,
    r: &Rotation,
    spec: &HookSpec,
    next: u64,
    before: Option<&SecretMeta>,
) -> Result<HookRun, Failure> {
    if let Some(exec) = &spec.exec {
        // Hooks are stored with a secret, so a secret with a hook exists;
        // never fall back to running the exec hook's display text on the host.
        let Some(meta) = before else { return Err(aborted(r, None, "the secret vanished", "")) };
        return pre_rotate_exec(rotation_state, r, spec, exec, next, meta).await;
    }
    let env = [
        ("SEG_HOOK", "pre-rotate".to_owned()),
        ("SEG_SECRET_NAME", r.name.to_string()),
        ("SEG_SECRET_VERSION", next.to_string()),
    ];
    let outcome = hooks::run(spec, Input::Secret(&r.value), &env).await;
    let hook = HookLog {
        kind: "pre-rotate",
        action: "command".into(),
        target: shorten(&spec.command),
        container: None,
        status: outcome.run.status.clone(),
        duration_ms: outcome.run.duration_ms,
    };
    let record = HookRecord {
        socket: Socket::Admin,
        secret: &r.name,
        version: next,
        attempted: true,
        who: None,
        hook,
        ok: outcome.ok,
    };
    rotation_state.log_hook(record);
    if outcome.ok {
        return Ok(outcome.run);
    }
    Err(aborted(r, before, &outcome.run.status, &outcome.output))
}

/// The exec variant: every running replica of the service must succeed.
async fn pre_rotate_exec(
    rotation_state: &RotationState,
    r: &Rotation,
    spec: &HookSpec,
    exec: &ExecHook,
    next: u64,
    meta: &SecretMeta,
) -> Result<HookRun, Failure> {
    let started = Instant::now();
    let call = Call {
        kind: "pre-rotate",
        secret: &r.name,
        version: next,
        exec,
        timeout: Duration::from_millis(spec.timeout_ms),
        stdin: r.value.expose(),
        stop_on_failure: true,
    };
    let targets = match hook_exec::resolve(rotation_state, meta, exec).await {
        Ok(t) => t,
        Err(why) => {
            let run = HookRun { status: why.clone(), duration_ms: started.elapsed().as_millis() as u64 };
            hook_exec::log(
                rotation_state,
                &call,
                None,
                &HookResult { run, ok: false, output: String::new() },
            );
            return Err(aborted(r, Some(meta), &why, ""));
        }
    };
    let done = hook_exec::run(rotation_state, &call, &targets).await;
    let names: Vec<String> =
        done.iter().filter(|(_, h)| h.ok).map(|(t, _)| t.container.name.clone()).collect();
    if let Some((t, failed)) = done.iter().find(|(_, h)| !h.ok) {
        let mut what = format!("{} in {}", failed.run.status, t.shown());
        if !names.is_empty() {
            what.push_str(&format!("; it had already succeeded in {}", names.join(", ")));
        }
        return Err(aborted(r, Some(meta), &what, &failed.output));
    }
    let status = format!("exit 0 in {} container(s): {}", names.len(), names.join(", "));
    Ok(HookRun { status, duration_ms: started.elapsed().as_millis() as u64 })
}

/// The answer to an aborted rotation; `output` is shown unless it could
/// contain the value.
fn aborted(r: &Rotation, before: Option<&SecretMeta>, what: &str, output: &str) -> Failure {
    let output = hooks::redact(output, &r.value);
    let stays = before.map(|m| format!("version {} stays current", m.version)).unwrap_or_default();
    let msg = format!(
        "the pre-rotate hook of {} failed ({what}); the rotation was aborted: nothing was distributed and {stays}{}",
        r.name,
        if output.is_empty() { String::new() } else { format!(". Hook output: {output}") }
    );
    Failure::new(StatusCode::CONFLICT, "hook_failed", msg)
}

/// Waits until the consumers have the new version (at most the hook's
/// timeout), then runs the post-rotate exec hook in every replica.
async fn post_rotate_exec(rotation_state: Arc<RotationState>, meta: SecretMeta, previous: Option<u64>) {
    let Some(spec) = meta.hooks.post_rotate.clone() else { return };
    let Some(exec) = spec.exec.as_ref() else { return };
    let timeout = Duration::from_millis(spec.timeout_ms);
    wait_for_acks(&rotation_state, &meta, timeout).await;
    let event = serde_json::json!({"secret": meta.name, "version": meta.version, "previous": previous});
    let stdin = event.to_string().into_bytes();
    let call = Call {
        kind: "post-rotate",
        secret: &meta.name,
        version: meta.version,
        exec,
        timeout,
        stdin: &stdin,
        stop_on_failure: false,
    };
    match hook_exec::resolve(&rotation_state, &meta, exec).await {
        Ok(targets) => drop(hook_exec::run(&rotation_state, &call, &targets).await),
        Err(why) => {
            let run = HookRun { status: why, duration_ms: 0 };
            hook_exec::log(
                &rotation_state,
                &call,
                None,
                &HookResult { run, ok: false, output: String::new() },
            );
        }
    }
}

/// True once every watching consumer acknowledged `meta`'s version.
async fn wait_for_acks(rotation_state: &RotationState, meta: &SecretMeta, limit: Duration) -> bool {
    let mut changes = rotation_state.consumers.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if rotation_state.status(meta, None).complete {
            return true;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_defaults_to_ten_minutes_and_is_bounded() {
        assert_eq!(grace_policy(None).unwrap(), Duration::from_millis(DEFAULT_GRACE_MS));
        assert_eq!(grace_policy(Some(0)).unwrap(), Duration::ZERO);
        assert_eq!(grace_policy(Some(MAX_GRACE_MS)).unwrap(), Duration::from_millis(MAX_GRACE_MS));
        assert_eq!(grace_policy(Some(MAX_GRACE_MS + 1)).unwrap_err().code, "bad_grace");
    }
}
