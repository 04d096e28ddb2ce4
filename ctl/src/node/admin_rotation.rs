//! The rotation side of the admin API: rotate, hooks, consumer status
//! (optionally waiting until every consumer has a version).

use super::access_log::Entry;
use super::admin::Admin;
use super::http::{self, json, Failure, ReqBody, Resp};
use super::{read_store, store_failure, with_store};
use crate::store::SecretMeta;
use hyper::{Request, StatusCode};
use seg_common::api::{Hooks, SecretStatus, SetHooks, MAX_WAIT_MS};
use seg_common::name::SecretName;
use std::time::Duration;
use tokio::time::Instant;

/// While waiting, re-check at least this often (streams come and go
/// without an acknowledgement).
const RECHECK: Duration = Duration::from_millis(200);

impl Admin {
    /// `POST /v1/secrets/{name}/rotate[?ttl_ms=N&grace_ms=N]`, body = value.
    pub(super) async fn rotate<B: ReqBody>(
        &self,
        name: SecretName,
        req: Request<B>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let [ttl, grace] = http::numbers_query(req.uri().query(), ["ttl_ms", "grace_ms"])?;
        let rotation = self.rotation(name, ttl, grace, true, req).await?;
        let done = super::rotate::rotate(&self.store, &self.rotation_state, rotation, entry).await?;
        Ok(json(StatusCode::OK, &done))
    }

    /// `GET /v1/secrets/{name}/hooks`.
    pub(super) async fn hooks(&self, name: SecretName) -> Result<Resp, Failure> {
        let meta = self.meta(&name).await?;
        Ok(json(StatusCode::OK, &meta.hooks))
    }

    /// `PUT /v1/secrets/{name}/hooks` with a [`SetHooks`]; answers the new hooks.
    pub(super) async fn set_hooks<B: ReqBody>(
        &self,
        name: SecretName,
        req: Request<B>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let change: SetHooks = http::read_json_request(req).await?;
        let _guard = self.rotation_state.lock_secret(&name).await;
        let mut hooks = self.meta(&name).await?.hooks;
        apply(&mut hooks, change);
        entry.reason = describe(&hooks);
        let (n, h) = (name.clone(), hooks.clone());
        with_store(&self.store, move |s| s.set_hooks(&n, &h)).await?.map_err(store_failure)?;
        Ok(json(StatusCode::OK, &hooks))
    }

    /// `GET /v1/secrets/{name}/status[?version=N&wait_ms=N]`.
    pub(super) async fn secret_status(
        &self,
        name: SecretName,
        query: Option<&str>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let [version, wait_ms] = http::numbers_query(query, ["version", "wait_ms"])?;
        let wait = Duration::from_millis(wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
        let deadline = Instant::now() + wait;
        let mut changes = self.rotation_state.consumers.subscribe();
        let status = loop {
            let meta = self.meta(&name).await?;
            let status = self.status_of(&meta, version);
            if status.complete || Instant::now() >= deadline {
                break status;
            }
            let next = deadline.min(Instant::now() + RECHECK);
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(next) => {}
            }
        };
        entry.version = Some(status.wanted);
        let have = status.consumers.iter().filter(|c| c.version.is_some_and(|v| v >= status.wanted)).count();
        entry.reason =
            format!("{have} of {} consumer(s) have version {}", status.consumers.len(), status.wanted);
        Ok(json(StatusCode::OK, &status))
    }

    fn status_of(&self, meta: &SecretMeta, wanted: Option<u64>) -> SecretStatus {
        self.rotation_state.status(meta, wanted)
    }

    async fn meta(&self, name: &SecretName) -> Result<SecretMeta, Failure> {
        let n = name.clone();
        read_store(&self.store, |s| s.meta(&n)).map_err(store_failure)
    }
}

/// Applies a [`SetHooks`]: clear first, then set.
pub fn apply(hooks: &mut Hooks, change: SetHooks) {
    if change.clear_pre_rotate {
        hooks.pre_rotate = None;
    }
    if change.clear_post_rotate {
        hooks.post_rotate = None;
    }
    if let Some(h) = change.pre_rotate {
        hooks.pre_rotate = Some(h);
    }
    if let Some(h) = change.post_rotate {
        hooks.post_rotate = Some(h);
    }
}

/// For the access log: which hooks are set (commands are not secret, but
/// they can be long).
fn describe(hooks: &Hooks) -> String {
    let show = |h: &Option<seg_common::api::HookSpec>| match h {
        Some(h) => super::rotation_state::shorten(&h.command),
        None => "-".into(),
    };
    format!("pre-rotate {}; post-rotate {}", show(&hooks.pre_rotate), show(&hooks.post_rotate))
}

#[cfg(test)]
#[path = "admin_rotation_tests.rs"]
mod tests;
