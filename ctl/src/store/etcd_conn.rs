//! The cluster store's link to etcd: TLS options, the client key, and
//! requests retried while that is safe, with errors said once.

use super::envelope::Kek;
use super::{disk, StoreError};
use etcd_client::ConnectOptions;
use seg_common::secret::SecretBytes;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach etcd and what to seal with.
#[derive(Debug)]
pub struct EtcdConfig {
    /// `https://host:port` of each member.
    pub endpoints: Vec<String>,
    /// PEM CA that signed the members' certificates.
    pub ca: PathBuf,
    /// PEM client certificate and key (mode 0600) for mutual TLS; `None`
    /// connects without one, which a `--client-cert-auth` etcd refuses.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Key prefix of this seg cluster, e.g. `/seg`.
    pub prefix: String,
    pub kek: Kek,
    /// Bound on each etcd request of a write or of the first load.
    pub timeout: Duration,
}

const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why an etcd request failed, and whether it may still take effect.
pub(super) struct Failed {
    pub cause: String,
    pub maybe_applied: bool,
}

/// A request that failed to connect, or that a member without a leader
/// refused (`require_leader`), was applied nowhere. tonic reports both only
/// as text, so this reads the error's text.
fn never_reached_etcd(cause: &str) -> bool {
    ["tcp connect error", "Connection refused", "no leader"].iter().any(|m| cause.contains(m))
}

pub(super) fn unreachable(
    endpoints: &str,
    cause: &dyn std::fmt::Display,
    outcome: &'static str,
) -> StoreError {
    StoreError::Unreachable { endpoints: endpoints.to_owned(), cause: cause.to_string(), outcome }
}

/// An error and its sources, each said once (tonic's transport errors put
/// the useful part — refused, handshake failure — in the sources).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// TLS (CA, and the client certificate when given) and timeouts. The key
/// is read into `SecretBytes`; tonic keeps its own copy for the
/// connection's life (heap copies are wiped on free by segctl's allocator).
pub(super) fn connect_options(cfg: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let ca = std::fs::read(&cfg.ca).map_err(disk::io_err("reading the etcd CA certificate", &cfg.ca))?;
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert_path, key_path)) = &cfg.identity {
        let cert = std::fs::read(cert_path)
            .map_err(disk::io_err("reading the etcd client certificate", cert_path))?;
        let key = read_key(key_path)?;
        tls = tls.identity(Identity::from_pem(cert, key.expose()));
    }
    Ok(ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(cfg.timeout)
        .with_timeout(cfg.timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        // A member cut off from the others answers at once instead of
        // holding the request until it times out.
        .with_require_leader(true))
}

/// The client key: a private regular file, read into locked memory.
fn read_key(path: &Path) -> Result<SecretBytes, StoreError> {
    let meta = std::fs::metadata(path).map_err(disk::io_err("inspecting the etcd client key", path))?;
    disk::check_private_file(path, &meta)?;
    let bytes = std::fs::read(path).map_err(disk::io_err("reading the etcd client key", path))?;
    let key = SecretBytes::from_slice(&bytes);
    drop(zeroize::Zeroizing::new(bytes));
    Ok(key)
}

/// The cluster's KEK from `path`: a private regular file of exactly 32
/// bytes (e.g. `head -c 32 /dev/urandom`), read into locked memory.
pub fn read_kek_file(path: &Path) -> Result<Kek, StoreError> {
    let meta = std::fs::metadata(path).map_err(disk::io_err("inspecting the KEK file", path))?;
    disk::check_private_file(path, &meta)?;
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(disk::io_err("reading the KEK file", path))?);
    let len = super::envelope::KEY_LEN;
    if bytes.len() != len {
        let reason = format!(
            "a KEK file holds exactly {len} bytes and this one has {}; make one with \
             `head -c {len} /dev/urandom > FILE && chmod 600 FILE` and give every node the same file",
            bytes.len()
        );
        return Err(StoreError::Corrupt { path: path.to_owned(), reason });
    }
    let secret = SecretBytes::from_slice(&bytes);
    Kek::from_secret(&secret)
        .map_err(|e| StoreError::Corrupt { path: path.to_owned(), reason: e.to_string() })
}

/// Runs one etcd request, retried within `timeout` while a
/// retry is safe: always for a read (`idempotent`), and for a write
/// only when the request provably did not reach a member that could
/// apply it. The client spreads requests over the members, and one that
/// is down answers "connection refused" instead of being skipped.
pub(super) async fn call<T, Fut>(
    timeout: Duration,
    idempotent: bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, Failed>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<String> = None;
    loop {
        let Ok(result) = tokio::time::timeout_at(deadline, op()).await else {
            let waited = format!("no answer within {} ms", timeout.as_millis());
            let cause = last.map_or(waited.clone(), |l| format!("{l}; then {waited}"));
            return Err(Failed { cause, maybe_applied: !idempotent });
        };
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let cause = chain(&e);
        let not_sent = never_reached_etcd(&cause);
        if !(idempotent || not_sent) || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(Failed { cause, maybe_applied: !idempotent && !not_sent });
        }
        last = Some(cause);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_reached_no_member_are_known_unapplied() {
        assert!(never_reached_etcd("transport error: tcp connect error: Connection refused (os error 111)"));
        assert!(never_reached_etcd(
            "grpc request error: status: Unavailable, message: \"etcdserver: no leader\""
        ));
        assert!(!never_reached_etcd("grpc request error: status: DeadlineExceeded"));
        assert!(!never_reached_etcd("transport error: stream closed because of a broken pipe"));
    }

    #[test]
    fn chain_says_each_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let outer = StoreError::Io { action: "reading", path: "x".into(), cause: inner };
        assert_eq!(chain(&outer), "reading x: connection refused");
    }

    #[test]
    fn a_kek_file_must_be_private_and_exactly_32_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let write = |bytes: &[u8], mode: u32| {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&[7; 32], 0o600);
        let kek = read_kek_file(&path).unwrap();
        assert_eq!(kek.id(), Kek::from_secret(&SecretBytes::from_slice(&[7; 32])).unwrap().id());
        write(&[7; 31], 0o600);
        let short = read_kek_file(&path).unwrap_err().to_string();
        assert!(
            short.contains("exactly 32 bytes and this one has 31") && short.contains("head -c 32"),
            "{short}"
        );
        write(&[7; 32], 0o644);
        let open = read_kek_file(&path).unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");
        let missing = read_kek_file(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("inspecting the KEK file"), "{missing}");
    }

    #[tokio::test]
    async fn writes_are_not_retried_after_an_ambiguous_failure() {
        let mut calls = 0;
        let failed = call(Duration::from_secs(1), false, || {
            calls += 1;
            async { Err::<(), _>(etcd_client::Error::WatchError("broken pipe".into())) }
        })
        .await
        .err()
        .unwrap();
        assert_eq!(calls, 1);
        assert!(failed.maybe_applied && failed.cause.contains("broken pipe"));
        let mut calls = 0;
        let failed = call(Duration::from_millis(300), true, || {
            calls += 1;
            async { Err::<(), _>(etcd_client::Error::WatchError("broken pipe".into())) }
        })
        .await
        .err()
        .unwrap();
        assert!(calls > 1 && !failed.maybe_applied, "reads are retried until the timeout ({calls} calls)");
    }
}
