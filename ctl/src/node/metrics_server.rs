//! The `--metrics-addr` listener: plain HTTP/1.1, `GET /metrics` only.
//! Plain, not TLS: bind it to loopback or a monitoring network (the text
//! holds counts, never a secret's name, value or bytes).

use super::metrics::Metrics;
use super::rotation_state::RotationState;
use super::server::builder;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapers at once; more wait in the kernel's backlog.
const MAX_SCRAPERS: usize = 16;

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, state: Arc<RotationState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, state) = (metrics.clone(), state.clone());
        tokio::spawn(async move {
            let _slot = permit;
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, state) = (metrics.clone(), state.clone());
                async move { Ok::<_, Infallible>(answer(&metrics, &state, &req)) }
            });
            let _ = builder().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn answer<B>(metrics: &Metrics, state: &RotationState, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, kind.parse().expect("a valid header value"));
        resp
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "only /metrics is served here\n".into());
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into());
    }
    metrics.watch_streams.set(state.hub.count() as i64);
    reply(StatusCode::OK, CONTENT_TYPE, metrics.render())
}
