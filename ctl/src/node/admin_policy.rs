//! The admin routes of segregation, dispatched early by the admin API
//! (`node::admin`): `/v1/policies…`, `/v1/icc` and `/v1/networks…` (wire
//! types in `seg_common::api::policy` and `::network`). HTTP lives in the node only: segregation
//! itself knows nothing of requests and responses.
//! The access log gets one line per request through the admin API's own
//! entry: the action here, what changed in its reason.

use super::access_log::Entry;
use super::admin_grants::Grants;
use super::http::{json, Failure, ReqBody, Resp};
use crate::network::NetworkError;
use crate::segregation::{OpError, Segregation};
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};
use seg_common::api::network::NetworkCreate;
use seg_common::api::policy::{IccRequest, PolicySource};
use std::time::Duration;

/// A policy (or a compose file holding one) may be large; requests are not.
pub const MAX_BODY: usize = 1024 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-probe timeout of `verify` unless the request says otherwise.
pub const DEFAULT_PROBE_MS: u64 = 1000;

/// Whether a path belongs to segregation.
pub fn owns(path: &str) -> bool {
    let under =
        |root: &str| path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'));
    under("/v1/policies") || under("/v1/networks") || path == "/v1/icc"
}

fn action(method: &Method, parts: &[&str]) -> &'static str {
    match (method.as_str(), parts) {
        ("GET", ["policies"]) => "policy_list",
        ("POST", ["policies"]) => "policy_apply",
        ("POST", ["policies", "-", "diff"]) => "policy_diff",
        ("GET", ["policies", "-", "check"]) => "policy_check",
        ("GET", ["policies", "-", "verify"]) => "policy_verify",
        ("GET", ["policies", name]) if *name != "-" => "policy_show",
        ("DELETE", ["policies", name]) if *name != "-" => "policy_remove",
        ("GET", ["icc"]) => "icc_status",
        ("PUT", ["icc"]) => "icc_set",
        ("GET", ["networks"]) => "network_list",
        ("POST", ["networks"]) => "network_create",
        ("DELETE", ["networks", _]) => "network_remove",
        _ => "unknown",
    }
}

pub async fn handle<B: ReqBody>(
    seg: Option<&Segregation>,
    grants: Grants<'_>,
    uid: u32,
    req: Request<B>,
    entry: &mut Entry,
) -> Result<Resp, Failure> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    entry.action = action(req.method(), &parts);
    if entry.action == "unknown" {
        let shown: String = path.chars().take(100).collect();
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no admin route {} {shown:?} (see `segctl policy --help`, `segctl net --help`)",
                req.method()
            ),
        ));
    }
    if uid != 0 {
        let msg = format!("the admin socket serves root (uid 0) only; the caller is uid {uid}");
        return Err(Failure::new(StatusCode::FORBIDDEN, "not_root", msg));
    }
    let Some(seg) = seg else {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "segregation_off",
            "network segregation does not run in this controller",
        ));
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let result = route(seg, grants, entry, &parts, &query, req).await;
    result.map_err(failure)
}

async fn route<B: ReqBody>(
    seg: &Segregation,
    grants: Grants<'_>,
    entry: &mut Entry,
    parts: &[&str],
    query: &str,
    req: Request<B>,
) -> Result<Resp, OpError> {
    match entry.action {
        "policy_list" => ok(&seg.list().await),
        "policy_show" => ok(&seg.show(parts[1]).await?),
        "policy_apply" => {
            let done = grants.apply(seg, read_json::<PolicySource, B>(req).await?).await?;
            entry.reason = format!(
                "policy {}: changed={}, {} chain(s) written, {} removed, networks created {:?}, moves {:?}, \
                 granted {}, revoked {}",
                done.name,
                done.changed,
                done.rules.chains_written,
                done.rules.chains_removed,
                done.networks.created,
                done.networks.attachments,
                shown(&done.grants.granted),
                shown(&done.grants.revoked)
            );
            ok(&done)
        }
        "policy_remove" => {
            let done = grants.remove(seg, parts[1]).await?;
            entry.reason = format!(
                "policy {} removed, {} chain(s) removed, revoked {}",
                done.name,
                done.rules.chains_removed,
                shown(&done.grants.revoked)
            );
            ok(&done)
        }
        "policy_diff" => ok(&grants.diff(seg, read_json::<PolicySource, B>(req).await?).await?),
        "policy_check" => {
            let q = Query::parse(query, &["from", "to", "port"])?;
            ok(&seg.check(q.need("from")?, q.need("to")?, q.need("port")?).await?)
        }
        "policy_verify" => {
            let q = Query::parse(query, &["name", "timeout_ms"])?;
            let ms = match q.get("timeout_ms") {
                Some(t) => {
                    t.parse().map_err(|_| OpError::BadRequest("timeout_ms must be a number".into()))?
                }
                None => DEFAULT_PROBE_MS,
            };
            ok(&seg.verify(q.get("name"), Duration::from_millis(ms.clamp(50, 10_000))).await?)
        }
        "network_list" => ok(&seg.networks().await?),
        "network_create" => {
            let request: NetworkCreate = read_json(req).await?;
            let done = seg.create_network(&request).await?;
            entry.reason = format!("network {} created ({})", done.name, done.id);
            ok(&done)
        }
        "network_remove" => {
            let done = seg.remove_network(parts[1]).await?;
            entry.reason = format!("network {} removed", done.name);
            ok(&done)
        }
        "icc_status" => {
            let q = Query::parse(query, &["daemon_json"])?;
            ok(&seg.icc_status_with(q.get("daemon_json")).await?)
        }
        _ => {
            let request: IccRequest = read_json(req).await?;
            let done = seg.set_icc(&request).await?;
            entry.reason = format!(
                "docker0 icc {}{}",
                if request.enabled { "enabled" } else { "disabled" },
                done.daemon_json.as_deref().map(|d| format!("; {d}")).unwrap_or_default()
            );
            ok(&done)
        }
    }
}

/// `[db-password to shop/app, …]` for the access log (names only).
fn shown(list: &[seg_common::api::policy::DeclaredGrant]) -> String {
    let items: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn ok<T: serde::Serialize>(value: &T) -> Result<Resp, OpError> {
    Ok(json(StatusCode::OK, value))
}

fn failure(e: OpError) -> Failure {
    let (status, code) = match &e {
        OpError::BadPolicy(_) => (StatusCode::BAD_REQUEST, "bad_policy"),
        OpError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        OpError::DaemonJson(_) => (StatusCode::BAD_REQUEST, "bad_daemon_json"),
        OpError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        OpError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        OpError::Unavailable(_) | OpError::Docker(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable")
        }
        OpError::Network(n) => network_status(n),
        OpError::Firewall(_) => (StatusCode::INTERNAL_SERVER_ERROR, "firewall_error"),
        OpError::Store(_) | OpError::SecretStore(_) | OpError::Grant { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
        }
        OpError::UnknownSecrets { .. } => (StatusCode::BAD_REQUEST, "unknown_secret"),
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("segregation: {e}");
    }
    Failure::new(status, code, e.to_string())
}

fn network_status(e: &NetworkError) -> (StatusCode, &'static str) {
    match e {
        NetworkError::BadName { .. } | NetworkError::BadSubnet { .. } | NetworkError::Predefined(_) => {
            (StatusCode::BAD_REQUEST, "bad_network")
        }
        NetworkError::ConflictingDeclarations { .. } => (StatusCode::BAD_REQUEST, "bad_policy"),
        NetworkError::NotFound(_) => (StatusCode::NOT_FOUND, "network_not_found"),
        NetworkError::AlreadyExists(_) | NetworkError::InUse { .. } => {
            (StatusCode::CONFLICT, "network_conflict")
        }
        NetworkError::Docker { .. } | NetworkError::Step { .. } => (StatusCode::BAD_GATEWAY, "docker_error"),
    }
}

async fn read_json<T: serde::de::DeserializeOwned, B: ReqBody>(req: Request<B>) -> Result<T, OpError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => return Err(OpError::BadRequest("the request body did not arrive within 5 s".into())),
        Ok(Err(e)) => {
            return Err(OpError::BadRequest(format!("cannot read the request body (limit 1 MiB): {e}")))
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| OpError::BadRequest(format!("request body is not valid JSON: {e}")))
}

/// A query string: only the names given, each once, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str, names: &[&str]) -> Result<Query, OpError> {
        let mut out = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !names.contains(&k) {
                return Err(OpError::BadRequest(format!(
                    "unknown query parameter `{k}`; accepted: {}",
                    names.join(", ")
                )));
            }
            out.push((k.to_owned(), decode(v)?));
        }
        Ok(Query(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str, OpError> {
        self.get(name).ok_or_else(|| OpError::BadRequest(format!("missing query parameter `{name}`")))
    }
}

/// `%XX` decoding (what `crate::client::encode` produces). Stricter than
/// the crate's decoder, which passes a malformed `%` through: that is a
/// client bug worth a clear error.
fn decode(text: &str) -> Result<String, OpError> {
    let bad = || OpError::BadRequest(format!("bad percent-encoding in `{text}`"));
    let malformed = text
        .match_indices('%')
        .any(|(i, _)| !text.get(i + 1..i + 3).is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    if malformed {
        return Err(bad());
    }
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8().map_err(|_| bad())?;
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::encode;

    #[test]
    fn routes_and_queries() {
        let parts = |p: &'static str| p.split('/').collect::<Vec<_>>();
        assert_eq!(action(&Method::POST, &parts("policies")), "policy_apply");
        assert_eq!(action(&Method::GET, &parts("policies/shop")), "policy_show");
        assert_eq!(action(&Method::GET, &parts("policies/-")), "unknown");
        assert_eq!(action(&Method::GET, &parts("policies/-/verify")), "policy_verify");
        assert_eq!(action(&Method::PUT, &parts("policies/shop")), "unknown");
        assert!(owns("/v1/policies") && owns("/v1/policies/x") && owns("/v1/icc") && !owns("/v1/iccx"));
        assert!(owns("/v1/networks") && owns("/v1/networks/app") && !owns("/v1/networksx"));
        assert_eq!(action(&Method::GET, &parts("networks")), "network_list");
        assert_eq!(action(&Method::POST, &parts("networks")), "network_create");
        assert_eq!(action(&Method::DELETE, &parts("networks/app")), "network_remove");
        assert_eq!(action(&Method::DELETE, &parts("networks")), "unknown");
        assert_eq!(action(&Method::GET, &parts("networks/app/x")), "unknown");
        let q = Query::parse(&format!("from={}&to=db", encode("shop/web 1")), &["from", "to"]).unwrap();
        assert_eq!((q.get("from"), q.need("to").unwrap()), (Some("shop/web 1"), "db"));
        assert!(Query::parse("x=1", &["from"]).is_err());
        assert!(decode("%zz").is_err());
    }

    #[test]
    fn network_errors_map_to_statuses_a_client_can_act_on() {
        let busy = NetworkError::InUse { name: "n".into(), containers: vec!["c".into()] };
        let bad = NetworkError::BadName { name: "-x".into(), why: "w".into() };
        let down = NetworkError::Docker { action: "a".into(), reason: "r".into() };
        assert_eq!(network_status(&busy), (StatusCode::CONFLICT, "network_conflict"));
        assert_eq!(network_status(&bad), (StatusCode::BAD_REQUEST, "bad_network"));
        assert_eq!(network_status(&NetworkError::NotFound("n".into())).0, StatusCode::NOT_FOUND);
        assert_eq!(network_status(&down), (StatusCode::BAD_GATEWAY, "docker_error"));
    }

    /// Responses hold bodies that are not `Debug`: look at the refusal only.
    fn refusal(r: Result<Resp, Failure>) -> Failure {
        r.err().expect("a refusal")
    }

    #[tokio::test]
    async fn only_root_and_only_with_segregation_running() {
        use crate::node::access_log::Socket;
        use bytes::Bytes;
        let req = |method: &str, path: &str| {
            Request::builder().method(method).uri(path).body(http_body_util::Full::new(Bytes::new())).unwrap()
        };
        let rig = crate::node::fakes::Rig::new();
        let grants = Grants { store: &rig.admin.store, rotation_state: &rig.admin.rotation_state };
        let mut entry = Entry::new(Socket::Admin, "unknown");
        let e = refusal(handle(None, grants, 1000, req("GET", "/v1/policies"), &mut entry).await);
        assert_eq!((e.status, entry.action), (StatusCode::FORBIDDEN, "policy_list"));
        let e = refusal(handle(None, grants, 0, req("PUT", "/v1/icc"), &mut entry).await);
        assert_eq!(
            (e.status, e.code, entry.action),
            (StatusCode::SERVICE_UNAVAILABLE, "segregation_off", "icc_set")
        );
        let e = refusal(handle(None, grants, 0, req("PATCH", "/v1/policies/x"), &mut entry).await);
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
