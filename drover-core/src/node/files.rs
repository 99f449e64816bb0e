//! The node's file service: the account's part of the node's work directory (its tasks'
//! directories, its start task's) read, listed and removed over HTTP by the API and the CLI on any
//! host ([`crate::node_files`] is the client). A request must be signed with the key the node
//! published in Redis, and every path resolves beneath the directory ([`beneath`]): nothing a
//! task left there, links included, leads the worker outside it.

use crate::node_files::{self, LIST_LIMIT, SIGNATURE, STAT};
use crate::staging::beneath;
use crate::{Error, Result};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Binds the service to `listen` and tells what others reach it at: `url` if given, else
/// `http://<ip>:<port>` with the bound address, or (bound to every interface) the address this
/// host reaches Redis from: the one the hosts that share the status store can reach.
pub(crate) async fn bind(
    listen: SocketAddr,
    url: Option<&str>,
    redis_url: &str,
) -> Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("the file service's address {listen}"), e))?;
    let bound = listener.local_addr().map_err(|e| Error::io("the file service's address", e))?;
    let url = match url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let ip = match bound.ip() {
                ip if ip.is_unspecified() => reach_ip(redis_url).await.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                ip => ip,
            };
            format!("http://{}", SocketAddr::new(ip, bound.port()))
        }
    };
    Ok((listener, url))
}

/// The local address of a route to the (first) Redis host of `redis_url`.
async fn reach_ip(redis_url: &str) -> Option<IpAddr> {
    let rest = redis_url.split_once("://").map_or(redis_url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let first = authority.split(',').next()?;
    let first = if first.contains(':') && !first.ends_with(']') { first.to_string() } else { format!("{first}:6379") };
    let addr = tokio::net::lookup_host(first).await.ok()?.next()?;
    let socket = std::net::UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

struct Service {
    root: PathBuf,
    key: Vec<u8>,
}

/// Serves `root` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, root: PathBuf, key: Vec<u8>) {
    let service = Arc::new(Service { root, key });
    let app = axum::Router::new()
        .fallback(move |method: Method, uri: Uri, headers: HeaderMap| handle(service.clone(), method, uri, headers));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the node's file service stopped");
    }
}

async fn handle(service: Arc<Service>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let signature = headers.get(SIGNATURE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !node_files::verify(&service.key, method.as_str(), target, signature, crate::model::now_ms()) {
        return (StatusCode::FORBIDDEN, "not signed with this node's key, or expired").into_response();
    }
    let rest = uri.path().strip_prefix("/v1/").unwrap_or_default();
    let (op, encoded) = rest.split_once('/').unwrap_or((rest, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|s| s.into_owned());
    let (mut scope, mut recursive) = (String::new(), false);
    for (name, value) in uri.query().unwrap_or_default().split('&').filter_map(|p| p.split_once('=')) {
        match name {
            "root" => scope = decode(value).unwrap_or_else(|_| "\0".into()),
            "recursive" => recursive = value == "true",
            _ => {}
        }
    }
    let rel = decode(encoded).unwrap_or_else(|_| "\0".into());
    if let Err(e) = node_files::check_path("root", &scope).and_then(|()| node_files::check_path("path", &rel)) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let (root, rel) = (service.root.join(scope), PathBuf::from(rel));
    let answer = match (method, op) {
        (Method::GET, "stat") => {
            blocking(move || beneath::stat(&root, &rel)).await.map(|e| axum::Json(e).into_response())
        }
        (Method::GET, "list") => blocking(move || beneath::list(&root, &rel, recursive, LIST_LIMIT))
            .await
            .map(|e| axum::Json(e).into_response()),
        (Method::DELETE, "file") => {
            blocking(move || beneath::remove(&root, &rel, recursive)).await.map(|()| StatusCode::OK.into_response())
        }
        (Method::GET, "file") => read(root, rel, headers.get("range").and_then(|v| v.to_str().ok())).await,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    answer.unwrap_or_else(|e| {
        let status = match &e {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            // A path refused (it leads out, or is not a regular file) is the request's fault.
            Error::Invalid(_) | Error::Storage(_) => StatusCode::BAD_REQUEST,
            Error::State(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, e.to_string()).into_response()
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("the file service: {e}")))?
}

/// A regular file, whole or the range `bytes=START-[END]` of it (206 then).
async fn read(root: PathBuf, rel: PathBuf, range: Option<&str>) -> Result<Response> {
    use std::io::{Seek, SeekFrom};
    use tokio::io::AsyncReadExt;
    let range = range.map(|r| r.to_string());
    let (file, entry, start, length) = blocking(move || {
        let mut file = beneath::open_file(&root, &rel)?;
        let entry = beneath::stat_open(&file, &rel)?;
        let (start, length) = match range.as_deref() {
            Some(range) => node_files::byte_range(range, entry.size)?,
            None => (0, entry.size),
        };
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io("seeking in the file", e))?;
        Ok((file, entry, start, length))
    })
    .await?;
    let body = tokio::fs::File::from_std(file).take(length);
    let mut headers = HeaderMap::new();
    let stat = format!("{} {} {} {}", entry.size, entry.modified_ms, entry.changed_ms, entry.mode);
    if let Ok(v) = HeaderValue::from_str(&stat) {
        headers.insert(STAT, v);
    }
    let status = if start > 0 || length < entry.size { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    headers.insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok((status, headers, Body::from_stream(tokio_util::io::ReaderStream::new(body))).into_response())
}
