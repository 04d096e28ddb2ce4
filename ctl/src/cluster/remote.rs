//! One request to a node's cluster endpoint: TCP, TLS (rustls), then the
//! same small HTTP/1.1 exchange the admin socket uses
//! (`seg_common::uds_http`), which reads bodies straight into locked memory.

use super::ClusterError;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use seg_common::api::ApiError;
use seg_common::uds_http::{self, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// `https://HOST:PORT` of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
}

pub const DEFAULT_PORT: u16 = 7443;

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, ClusterError> {
        let bad =
            |why: &str| ClusterError::BadRequest(format!("{url:?} is not an https://HOST[:PORT] URL: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|_| bad("it does not parse"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty()) {
            return Err(bad("it has a path"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
        Ok(Endpoint { url: format!("https://{}", authority(&host, port)), host, port })
    }

    /// TCP, then TLS, then one request.
    pub async fn send(
        &self,
        config: Arc<ClientConfig>,
        req: &Request<'_>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, ClusterError> {
        let unreachable = |cause: String| ClusterError::Unreachable { url: self.url.clone(), cause };
        let name = ServerName::try_from(self.host.clone()).map_err(|e| unreachable(e.to_string()))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
        };
        let tls = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no TLS connection within {} s", timeout.as_secs()))),
        };
        uds_http::send_on(tls, &self.url, req, timeout, max_body)
            .await
            .map_err(|e| unreachable(e.to_string()))
    }

    /// A JSON request; a refusal becomes [`ClusterError::Refused`] with the
    /// endpoint's own explanation.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        config: Arc<ClientConfig>,
        method: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClusterError> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(body).expect("requests serialize"));
        let req = Request { method, path, content_type: "application/json", body: &bytes };
        let resp = self.send(config, &req, Duration::from_secs(30), 1 << 20).await?;
        if !resp.is_success() {
            let message =
                resp.json::<ApiError>().map_or_else(|_| format!("HTTP {}", resp.status), |e| e.error);
            return Err(ClusterError::Refused { url: self.url.clone(), status: resp.status, message });
        }
        resp.json().map_err(|e| ClusterError::Unreachable {
            url: self.url.clone(),
            cause: format!("unexpected answer to {method} {path}: {e}"),
        })
    }
}

/// The admin certificate `segctl cluster admin-cert --out DIR` wrote, as a
/// client configuration.
pub fn admin_config(dir: &std::path::Path) -> Result<Arc<ClientConfig>, ClusterError> {
    let ca = read_text(&dir.join("ca.crt"))?;
    let cert = read_text(&dir.join("admin.crt"))?;
    let key = super::files::read_private(&dir.join("admin.key"))?;
    super::tls::client(&ca, Some(&super::pem_pair(&cert, &key)))
}

fn read_text(path: &std::path::Path) -> Result<String, ClusterError> {
    std::fs::read_to_string(path).map_err(|e| ClusterError::Files {
        action: "reading",
        path: path.to_owned(),
        cause: e.to_string(),
    })
}

/// `HOST:PORT`, with brackets around an IPv6 address.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_a_default_port_and_refuse_the_rest() {
        let e = Endpoint::parse("https://10.0.0.1").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.url.as_str()), ("10.0.0.1", 7443, "https://10.0.0.1:7443"));
        let v6 = Endpoint::parse("https://[::1]:9000/").unwrap();
        assert_eq!((v6.host.as_str(), v6.url.as_str()), ("::1", "https://[::1]:9000"));
        assert!(Endpoint::parse("http://a:1").unwrap_err().to_string().contains("must be https"));
        assert!(Endpoint::parse("https://a:1/x").unwrap_err().to_string().contains("has a path"));
        assert!(Endpoint::parse("a b").is_err());
    }
}
