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
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(route("/v1/status"), Route::Status);
        assert_eq!(route("/v1/whoami"), Route::WhoAmI);
        assert_eq!(route("/v1/secrets"), Route::Secrets);
        assert_eq!(route("/v1/secrets/db"), Route::Secret("db"));
        assert_eq!(route("/v1/secrets/db/ttl"), Route::SecretTtl("db"));
        assert_eq!(route("/v1/secrets/db/grants"), Route::SecretGrants("db"));
        assert_eq!(route("/v1/secrets/db/rotate"), Route::SecretRotate("db"));
        assert_eq!(route("/v1/secrets/db/hooks"), Route::SecretHooks("db"));
        assert_eq!(route("/v1/secrets/db/status"), Route::SecretStatus("db"));
        assert_eq!(
            (route("/v1/watch"), route("/v1/ack"), route("/v1/notify")),
            (Route::Watch, Route::Ack, Route::Notify)
        );
        for other in ["/", "/v1", "/v1/", "/v2/status", "/v1/secrets/a/b", "/v1/secrets/db/x", "/v1/status/"]
        {
            assert_eq!(route(other), Route::Unknown, "{other}");
        }
    }

    #[test]
    fn ttl_query_accepts_only_ttl_ms() {
        assert_eq!(ttl_query(None), Ok(None));
        assert_eq!(ttl_query(Some("ttl_ms=2000")), Ok(Some(2000)));
        assert_eq!(ttl_query(Some("ttl_ms=x")).unwrap_err().code, "bad_ttl");
        assert_eq!(ttl_query(Some("ttl=5")).unwrap_err().code, "bad_request");
        let [a, b] = numbers_query(Some("grace_ms=5&ttl_ms=2000"), ["ttl_ms", "grace_ms"]).unwrap();
        assert_eq!((a, b), (Some(2000), Some(5)));
        assert_eq!(text_query(Some("secrets=a,b"), "secrets"), Ok(Some("a,b")));
        assert!(text_query(Some("x=1"), "secrets").is_err());
    }

    #[tokio::test]
    async fn secret_body_is_read_exactly() {
        let v = read_secret(Full::new(Bytes::from_static(b"hunter2")), Some(7)).await.unwrap();
        assert_eq!(v.expose(), b"hunter2");
        let short = read_secret(Full::new(Bytes::from_static(b"abc")), Some(7)).await.unwrap_err();
        assert_eq!(short.status, StatusCode::BAD_REQUEST);
        let long = read_secret(Full::new(Bytes::from_static(b"abcdefgh")), Some(7)).await.unwrap_err();
        assert_eq!(long.status, StatusCode::BAD_REQUEST);
        let none = read_secret(Full::new(Bytes::new()), None).await.unwrap_err();
        assert_eq!(none.status, StatusCode::LENGTH_REQUIRED);
    }

    #[tokio::test]
    async fn a_value_in_many_chunks_is_assembled_in_order() {
        use http_body_util::StreamBody;
        let value: Vec<u8> = (0..64 * 1024).map(|_| fastrand::u8(..)).collect();
        let frames: Vec<Result<_, std::convert::Infallible>> = value
            .chunks(8 * 1024 - 37)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let v = read_secret(body, Some(value.len() as u64)).await.unwrap();
        assert!(v.ct_eq(&value));
    }

    #[test]
    fn a_shared_chunk_is_left_to_its_other_holder() {
        let held = Bytes::from(vec![7u8; 100]);
        wipe_if_unique(held.clone());
        assert_eq!(&held[..], &[7u8; 100][..], "wiped a buffer someone else still reads");
        let mut shared = bytes::BytesMut::from(&[9u8; 64][..]); // as hyper splits its read buffer
        wipe_if_unique(shared.split_to(32).freeze());
        assert_eq!(&shared[..], &[9u8; 32][..]);
    }

    #[tokio::test]
    async fn oversized_values_are_refused_from_the_header() {
        let len = 600 * 1024;
        let err = read_secret(Full::new(Bytes::new()), Some(len)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.message, "value is 614400 bytes; limit is 524288");
    }

    #[tokio::test]
    async fn json_bodies_are_bounded() {
        let big = Bytes::from(vec![b' '; MAX_JSON_BODY + 1]);
        let err = read_json::<serde_json::Value, _>(Full::new(big), None).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let err =
            read_json::<serde_json::Value, _>(Full::new(Bytes::new()), Some(1 << 20)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn value_responses_carry_version_and_lease() {
        let resp = secret_value(SecretBytes::from_slice(b"x"), 4, 2000);
        assert_eq!(resp.headers()[HDR_VERSION], "4");
        assert_eq!(resp.headers()[HDR_LEASE_MS], "2000");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/octet-stream");
    }
}
