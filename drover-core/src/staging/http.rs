//! Plain HTTP(S) downloads of resource files.

use crate::{Error, Result};
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The client for resource files, trusting `ca_file`'s authorities too.
pub(super) fn client(ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let builder =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).read_timeout(Duration::from_secs(60));
    crate::tls::http_client(builder, ca_file)
}

/// Streams `url` into `dest` (the caller retries while the server is unavailable).
/// Refused (nothing left in place) past `limit` bytes.
/// Errors name the URL without its password or signature (`config::redact_url`).
pub(super) async fn download(client: &reqwest::Client, url: &str, dest: &Path, limit: u64) -> Result<u64> {
    let shown = crate::config::redact_url(url);
    let response = client.get(url).send().await.map_err(|e| {
        let e = e.without_url();
        if e.is_connect() || e.is_timeout() {
            Error::StorageUnavailable(format!("GET {shown}: {e}"))
        } else {
            Error::Storage(format!("GET {shown}: {e}"))
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        let message = format!("GET {shown}: HTTP {status}");
        return Err(if status.is_server_error() {
            Error::StorageUnavailable(message)
        } else {
            Error::Storage(message)
        });
    }
    let (mut file, part) = super::part_file(dest).await?;
    let mut stream = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::StorageUnavailable(format!("GET {shown}: {}", e.without_url())))?;
        bytes += chunk.len() as u64;
        if bytes > limit {
            drop(file);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(super::over_limit(&format!("GET {shown}"), limit));
        }
        file.write_all(&chunk).await.map_err(|e| Error::io(format!("write {}", part.display()), e))?;
    }
    file.flush().await.map_err(|e| Error::io(format!("write {}", part.display()), e))?;
    super::finish(&part, dest).await?;
    Ok(bytes)
}
