//! The monitor's HTTP endpoint: `GET /metrics` (Prometheus text format, behind HTTP basic
//! authentication and over TLS when configured) and `GET /health`.

use crate::metrics::Exporter;
use drover_core::tls::TlsAcceptor;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `Authorization` header /metrics asks for, from a `user:password` file only its owner may
/// read.
pub(crate) fn basic_auth(path: &std::path::Path) -> anyhow::Result<String> {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--metrics-auth-file {shown}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!("--metrics-auth-file {shown}: readable by others; chmod 600 it");
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--metrics-auth-file {shown}: {e}"))?;
    let line = text.lines().next().unwrap_or("").trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(line)))
        }
        _ => anyhow::bail!("--metrics-auth-file {shown}: expected one line `user:password`"),
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn serve(
    listen: SocketAddr,
    exporter: Arc<Exporter>,
    auth: Option<String>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth: Arc<Option<String>> = Arc::new(auth);
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    tracing::info!(%listen, tls = tls.is_some(), "serving /metrics");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (exporter, auth, tls) = (exporter.clone(), auth.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(exporter.clone(), auth.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "metrics TLS handshake failed"),
                    Err(_) => return tracing::debug!("metrics TLS handshake timed out"),
                },
                None => http.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection failed");
            }
        });
    }
}

/// Whether `given` is the expected header, compared in constant time.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

async fn respond(
    exporter: Arc<Exporter>,
    auth: Arc<Option<String>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = kind.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let given = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
    let allowed = auth.as_deref().is_none_or(|expected| same(given, expected.as_bytes()));
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") if !allowed => {
            let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "authentication required\n".into());
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"drover\""),
            );
            r
        }
        (&Method::GET, "/metrics") => match exporter.render().await {
            Ok(text) => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
            Err(e) => {
                tracing::warn!(error = %e, "scrape failed");
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("scrape failed: {e}\n"))
            }
        },
        (&Method::GET, "/health") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics\n".into()),
    })
}
