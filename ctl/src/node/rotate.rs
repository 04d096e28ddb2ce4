//! A rotation: run the pre-rotate hook with the new value, store the new
//! version, push it to every stream that follows the secret, open the grace
//! period of the previous version. `PUT /v1/secrets/{name}` on an existing
//! secret is a rotation with default options, so a hook cannot be bypassed.
//!
//! Nothing is distributed before the hook succeeded: a failing or hanging
//! hook leaves the store, the streams and every consumer untouched.

use super::access_log::{Entry, HookLog, Socket};
use super::consumers::now_ms;
use super::hooks::{self, Input};
use super::http::Failure;
use super::rotation_state::{shorten, HookRecord, RotationState};
use super::{read_store, store_failure, with_store};
use crate::store::{SecretMeta, SecretStore, StoreError};
use hyper::StatusCode;
use seg_common::api::{HookRun, HookSpec, RotateResult, DEFAULT_GRACE_MS, MAX_GRACE_MS};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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
    rotation_state: &RotationState,
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
        status: outcome.run.status.clone(),
        duration_ms: outcome.run.duration_ms,
    };
    let record =
        HookRecord { socket: Socket::Admin, secret: &r.name, version: next, who: None, hook, ok: outcome.ok };
    rotation_state.log_hook(record);
    if outcome.ok {
        return Ok(outcome.run);
    }
    let output = hooks::redact(&outcome.output, &r.value);
    let stays = before.map(|m| format!("version {} stays current", m.version)).unwrap_or_default();
    let msg = format!(
        "the pre-rotate hook of {} failed ({}); the rotation was aborted: nothing was distributed and {stays}{}",
        r.name,
        outcome.run.status,
        if output.is_empty() { String::new() } else { format!(". Hook output: {output}") }
    );
    Err(Failure::new(StatusCode::CONFLICT, "hook_failed", msg))
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
