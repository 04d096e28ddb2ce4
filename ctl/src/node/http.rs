//! HTTP pieces shared by both sockets: routes, JSON and error responses,
//! secret-value responses, and bounded request-body readers.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use seg_common::api::{ApiError, HDR_LEASE_MS, HDR_VERSION};
use seg_common::name::{SecretName, MAX_VALUE_LEN};
use seg_common::secret::SecretBytes;
use std::time::Duration;
use tokio::time::Instant;

/// A response body: a whole one, or a watch stream that lasts as long as
/// the connection.
pub type RespBody = Either<Full<Bytes>, super::watch::WatchBody>;
pub type Resp = Response<RespBody>;

fn full(bytes: Bytes) -> RespBody {
    Either::Left(Full::new(bytes))
}

/// A request body the readers accept: hyper's `Incoming` in production,
/// `Full<Bytes>` in tests.
pub trait ReqBody: Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Unpin {}
impl<B> ReqBody for B where B: Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Unpin {}

/// A request body must arrive completely within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JSON request body (TTL and grant requests are tiny).
pub const MAX_JSON_BODY: usize = 16 * 1024;

/// A refused request: status, stable code, human message (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn into_response(self) -> Resp {
        let body = ApiError { code: self.code.to_owned(), error: self.message };
        json(self.status, &body)
    }
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Hands the secret's own buffer to hyper, so the bytes are wiped when hyper
/// drops the body after writing it (no copy into a plain `Vec`).
struct SecretOwner(SecretBytes);

impl AsRef<[u8]> for SecretOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

pub fn secret_value(value: SecretBytes, version: u64, lease_ms: u64) -> Resp {
    let mut resp = Response::new(full(Bytes::from_owner(SecretOwner(value))));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(HDR_VERSION, HeaderValue::from(version));
    h.insert(HDR_LEASE_MS, HeaderValue::from(lease_ms));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

/// The routes of both APIs; which exist on which socket is up to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Status,
    WhoAmI,
    Secrets,
    Secret(&'a str),
    SecretTtl(&'a str),
    SecretGrants(&'a str),
    SecretRotate(&'a str),
    SecretHooks(&'a str),
    SecretStatus(&'a str),
    Watch,
    Ack,
    Notify,
    Unknown,
}

pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v1/") else { return Route::Unknown };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["status"] => Route::Status,
        ["whoami"] => Route::WhoAmI,
        ["secrets"] => Route::Secrets,
        ["secrets", name] => Route::Secret(name),
        ["secrets", name, "ttl"] => Route::SecretTtl(name),
        ["secrets", name, "grants"] => Route::SecretGrants(name),
        ["secrets", name, "rotate"] => Route::SecretRotate(name),
        ["secrets", name, "hooks"] => Route::SecretHooks(name),
        ["secrets", name, "status"] => Route::SecretStatus(name),
        ["watch"] => Route::Watch,
        ["ack"] => Route::Ack,
        ["notify"] => Route::Notify,
        _ => Route::Unknown,
    }
}

pub fn parse_name(raw: &str) -> Result<SecretName, Failure> {
    SecretName::parse(raw).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_name", e.to_string()))
}

/// `?ttl_ms=N` of a PUT; any other query parameter is refused so typos do
/// not silently do nothing.
pub fn ttl_query(query: Option<&str>) -> Result<Option<u64>, Failure> {
    let [ttl] = numbers_query(query, ["ttl_ms"])?;
    Ok(ttl)
}

/// The whole-number query parameters `names`, in that order; any other
/// parameter is refused.
pub fn numbers_query<const N: usize>(
    query: Option<&str>,
    names: [&'static str; N],
) -> Result<[Option<u64>; N], Failure> {
    let mut out = [None; N];
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(i) = names.iter().position(|n| *n == key) else {
            let shown: String = pair.chars().take(40).collect();
            return Err(Failure::bad_request(format!(
                "unknown query parameter {shown:?}; accepted: {}",
                names.join(", ")
            )));
        };
        let n = value.parse().map_err(|_| match key {
            "ttl_ms" => Failure::new(
                StatusCode::BAD_REQUEST,
                "bad_ttl",
                "ttl_ms must be a whole number of milliseconds",
            ),
            _ => Failure::bad_request(format!("{key} must be a whole number")),
        })?;
        out[i] = Some(n);
    }
    Ok(out)
}

/// The text query parameter `name` (`?secrets=a,b`); others are refused.
pub fn text_query<'a>(query: Option<&'a str>, name: &'static str) -> Result<Option<&'a str>, Failure> {
    let mut out = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if k == name => out = Some(v),
            _ => {
                let shown: String = pair.chars().take(40).collect();
                return Err(Failure::bad_request(format!(
                    "unknown query parameter {shown:?}; only {name} is accepted"
                )));
            }
        }
    }
    Ok(out)
}

pub fn allow_for(route: Route<'_>, admin: bool) -> Option<&'static str> {
    match (route, admin) {
        (Route::Status, true) | (Route::WhoAmI, false) => Some("GET"),
        (Route::Secrets, _) => Some("GET"),
        (Route::Secret(_), false) => Some("GET"),
        (Route::Secret(_), true) => Some("GET, PUT, DELETE"),
        (Route::SecretTtl(_), true) => Some("PUT"),
        (Route::SecretGrants(_), true) => Some("POST, DELETE"),
        (Route::SecretRotate(_), true) => Some("POST"),
        (Route::SecretHooks(_), true) => Some("GET, PUT"),
        (Route::SecretStatus(_), true) | (Route::Watch, false) => Some("GET"),
        (Route::Ack | Route::Notify, false) => Some("POST"),
        _ => None,
    }
}

pub fn is_known(method: &Method) -> bool {
    [Method::GET, Method::PUT, Method::POST, Method::DELETE].contains(method)
}

fn too_large(len: u64) -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("value is {len} bytes; limit is {MAX_VALUE_LEN}"),
    )
}

fn timed_out() -> Failure {
    Failure::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        format!("the request body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
    )
}

/// Reads a secret value of exactly its `Content-Length` straight into a
/// [`SecretBytes`] (allocated once at its final size, so it never grows and
/// leaves no copy behind). Oversized values are refused from the header
/// alone, before any of the body is read.
pub async fn read_secret<B: ReqBody>(
    mut body: B,
    content_length: Option<u64>,
) -> Result<SecretBytes, Failure> {
    let len = content_length.ok_or_else(|| {
        Failure::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the value with a Content-Length header",
        )
    })?;
    if len > MAX_VALUE_LEN as u64 {
        return Err(too_large(len));
    }
    let mut value = SecretBytes::zeroed(len as usize);
    let deadline = Instant::now() + BODY_TIMEOUT;
    let mut filled = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Failure::bad_request(format!("reading the request body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else { continue };
        let end = filled + chunk.len();
        if end > value.len() {
            return Err(Failure::bad_request("request body is longer than its Content-Length"));
        }
        value.as_mut_bytes()[filled..end].copy_from_slice(&chunk);
        filled = end;
        wipe_if_unique(chunk);
    }
    if filled != value.len() {
        return Err(Failure::bad_request("request body is shorter than its Content-Length"));
    }
    Ok(value)
}

/// Wipes a chunk we copied out of if nothing else shares its buffer. Usually
/// hyper's read buffer does; what it frees later (or leaves when it grows)
/// is zeroed by `segctl`'s global allocator (see `main.rs`).
fn wipe_if_unique(chunk: Bytes) {
    if let Ok(mut owned) = chunk.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut owned[..]);
    }
}

fn json_too_large() -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("JSON body is larger than {MAX_JSON_BODY} bytes"),
    )
}

/// Reads a small JSON body (bounded size and time) and parses it.
pub async fn read_json<T, B>(body: B, content_length: Option<u64>) -> Result<T, Failure>
where
    T: serde::de::DeserializeOwned,
    B: ReqBody,
{
    if content_length.is_some_and(|n| n > MAX_JSON_BODY as u64) {
        return Err(json_too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_JSON_BODY);
    let collected = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(json_too_large()),
        Ok(Err(e)) => return Err(Failure::bad_request(format!("reading the request body: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&collected)
        .map_err(|e| Failure::bad_request(format!("request body is not valid JSON: {e}")))
}

/// [`read_json`] of a whole request: its body, announced by its `Content-Length`.
pub async fn read_json_request<T, B>(req: hyper::Request<B>) -> Result<T, Failure>
where
    T: serde::de::DeserializeOwned,
    B: ReqBody,
{
    let len = content_length(&req);
    read_json(req.into_body(), len).await
}

pub fn content_length<B>(req: &hyper::Request<B>) -> Option<u64> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
