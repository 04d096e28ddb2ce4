//! The push side of the agent API: watch streams, acknowledgements,
//! post-rotate notifications and reads of the previous version during its
//! grace period.

use super::access_log::Entry;
use super::agent::{Agent, AgentConn};
use super::http::{self, json, Failure, Resp, RespBody};
use super::watch::Refusal;
use super::{notify, read_store, store_failure};
use crate::attest::Attested;
use crate::store::StoreError;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use seg_common::api::{AckRequest, NotifyRequest, WatchEvent};
use seg_common::name::SecretName;
use std::collections::BTreeSet;

impl Agent {
    /// `GET /v1/watch[?secrets=a,b]`: registers a stream, queues the hello
    /// and answers with the stream as the body.
    pub(super) async fn watch(
        &self,
        conn: &AgentConn,
        who: &Attested,
        query: Option<&str>,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let wants = match http::text_query(query, "secrets")? {
            Some(list) => Some(parse_names(list)?),
            None => None,
        };
        let refused =
            |r: Refusal| Failure::new(StatusCode::TOO_MANY_REQUESTS, "too_many_watches", r.to_string());
        let (id, body) =
            self.rotation_state.hub.open(who.clone(), wants.clone(), conn.hangup.clone()).map_err(refused)?;
        let granted = self.granted(who).await?;
        let secrets: Vec<_> =
            granted.into_iter().filter(|g| wants.as_ref().is_none_or(|w| w.contains(&g.name))).collect();
        entry.reason = format!("stream opened with {} secret(s)", secrets.len());
        let ping_ms = super::watch::PING_INTERVAL.as_millis() as u64;
        self.rotation_state.hub.publish(&[(id, WatchEvent::Hello { secrets, ping_ms })]);
        let mut resp = Response::new(RespBody::Right(body));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// `POST /v1/ack {name, version}`: the caller has that version on disk.
    pub(super) async fn ack(
        &self,
        who: &Attested,
        body: AckRequest,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let AckRequest { name, version } = body;
        entry.secret = Some(name.to_string());
        entry.version = Some(version);
        let current = self.granted_version(who, &name).await?;
        if version == 0 || version > current {
            let msg = format!("secret {name} has no version {version}; the current one is {current}");
            return Err(Failure::bad_request(msg));
        }
        self.rotation_state.consumers.ack(who, &name, version);
        // 200 with a body, not 204: sidecars before 0.2 required a
        // Content-Length, which a 204 never carries, and logged every
        // recorded acknowledgement as failed.
        Ok(json(StatusCode::OK, &serde_json::json!({ "name": name, "version": version })))
    }

    /// `POST /v1/notify`: run the post-rotate action the sidecar declared.
    pub(super) async fn notify(
        &self,
        who: &Attested,
        body: NotifyRequest,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        let names: Vec<String> = body.secrets.iter().map(|c| format!("{} v{}", c.name, c.version)).collect();
        entry.reason =
            format!("{} for {}", body.action.chars().take(100).collect::<String>(), names.join(", "));
        if let [one] = body.secrets.as_slice() {
            entry.secret = Some(one.name.to_string());
            entry.version = Some(one.version);
        }
        let done = notify::notify(&self.store, &self.rotation_state, who, body).await?;
        Ok(json(StatusCode::OK, &done))
    }

    /// `GET /v1/secrets/{name}?version=N` for a version that is not current.
    pub(super) async fn read_previous(
        &self,
        name: &SecretName,
        version: u64,
        current: u64,
        entry: &mut Entry,
    ) -> Result<Resp, Failure> {
        entry.version = Some(version);
        let gone = || {
            let msg = format!(
                "version {version} of {name} is not readable (only the current version {current}, and the \
                 previous one during its grace period after a rotation); read the current version"
            );
            Failure::new(StatusCode::GONE, "version_gone", msg)
        };
        if !self.rotation_state.consumers.previous_readable(name, version) {
            return Err(gone());
        }
        let n = name.clone();
        match read_store(&self.store, |s| s.get_version(&n, version)) {
            Ok(Some(v)) => Ok(http::secret_value(v.value, v.version, v.ttl_ms)),
            Ok(None) => Err(gone()),
            Err(e) => Err(store_failure(e)),
        }
    }

    /// The current version of `name`, if `who` may read it.
    async fn granted_version(&self, who: &Attested, name: &SecretName) -> Result<u64, Failure> {
        let n = name.clone();
        let denied = || {
            let msg = format!("{} may not read secret {name} (not granted, or no such secret)", who.identity);
            Failure::new(StatusCode::FORBIDDEN, "not_granted", msg)
        };
        match read_store(&self.store, |s| s.meta(&n)) {
            Ok(m) if m.grants.iter().any(|g| g.matches(&who.identity)) => Ok(m.version),
            Ok(_) | Err(StoreError::NotFound(_)) => Err(denied()),
            Err(e) => Err(store_failure(e)),
        }
    }
}

/// `a,b,c` → names (bad ones refused, like everywhere else).
fn parse_names(list: &str) -> Result<BTreeSet<SecretName>, Failure> {
    let mut out = BTreeSet::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        out.insert(http::parse_name(part)?);
    }
    if out.len() > 1024 {
        return Err(Failure::bad_request("watch at most 1024 secrets by name"));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "agent_rotation_tests.rs"]
mod tests;
