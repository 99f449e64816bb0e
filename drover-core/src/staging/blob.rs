//! Azure Blob Storage through a SAS (a container URL whose query grants access): listing a
//! container (`storageContainerUrl`) and uploading outputs (`containerUrl`), small files in one
//! request and larger ones in blocks. Errors name the URL without its signature.

use crate::model::BlobUrl;
use crate::{Error, Result};
use base64::Engine;
use std::io::Read;

/// The Blob service version drover speaks (that of the SAS tokens it is given decides access).
const VERSION: &str = "2019-12-12";

/// Files up to this size go in one request; larger ones in blocks of this size.
const BLOCK: usize = 8 << 20;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<Blob>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Blob {
    name: String,
}

/// The error for `response` to a request on `shown` (a redacted URL): unavailable (retried) for
/// a server error, a timeout or throttling; otherwise for good.
async fn refused(what: &str, shown: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    // Azure says why in an XML body (`<Code>AuthorizationFailure</Code>`).
    let body = response.text().await.unwrap_or_default();
    let code = body.split("<Code>").nth(1).and_then(|c| c.split("</Code>").next()).unwrap_or("");
    let message = format!("{what} {shown}: HTTP {status} {code}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Error::StorageUnavailable(message)
    } else {
        Error::Storage(message)
    }
}

/// The error for a request that got no answer.
fn unanswered(what: &str, shown: &str, e: reqwest::Error) -> Error {
    let e = e.without_url();
    if e.is_connect() || e.is_timeout() || e.is_request() {
        Error::StorageUnavailable(format!("{what} {shown}: {e}"))
    } else {
        Error::Storage(format!("{what} {shown}: {e}"))
    }
}

/// The names of the blobs in `container` whose names start with `prefix`.
pub(super) async fn list(http: &reqwest::Client, container: &BlobUrl, prefix: &str) -> Result<Vec<String>> {
    let shown = container.to_string();
    let mut names = Vec::new();
    let mut marker = String::new();
    loop {
        let mut query = format!("restype=container&comp=list&prefix={}", crate::model::percent_encode(prefix));
        if !marker.is_empty() {
            query.push_str(&format!("&marker={}", crate::model::percent_encode(&marker)));
        }
        let url = container.container_with(&query);
        let response =
            http.get(&url).header("x-ms-version", VERSION).send().await.map_err(|e| unanswered("list", &shown, e))?;
        if !response.status().is_success() {
            return Err(refused("list", &shown, response).await);
        }
        let text = response.text().await.map_err(|e| unanswered("list", &shown, e))?;
        let page: EnumerationResults = quick_xml::de::from_str(&text)
            .map_err(|e| Error::Storage(format!("list {shown}: not a blob listing: {e}")))?;
        names.extend(page.blobs.blob.into_iter().map(|b| b.name));
        match page.next_marker.filter(|m| !m.is_empty()) {
            Some(next) => marker = next,
            None => return Ok(names),
        }
    }
}

/// Uploads `file` (opened by the caller, beneath the task's directory) as the blob `dest`.
/// Returns its size.
pub(super) async fn upload(http: &reqwest::Client, file: std::fs::File, dest: &BlobUrl) -> Result<u64> {
    let shown = dest.to_string();
    let name = dest.path.clone();
    let size = file.metadata().map_err(|e| Error::io(format!("upload to {shown}"), e))?.len();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1);
    // The file is read on a blocking thread, one block at a time.
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut block = Vec::with_capacity(BLOCK);
            match (&mut file).take(BLOCK as u64).read_to_end(&mut block) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(Ok(block)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let read_error = |e: std::io::Error| Error::io(format!("upload to {shown}"), e);
    let put = |url: String, body: Vec<u8>, blob_type: bool| {
        let mut request = http.put(url).header("x-ms-version", VERSION).body(body);
        if blob_type {
            request = request.header("x-ms-blob-type", "BlockBlob");
        }
        request.send()
    };
    let check = |response: reqwest::Response| async {
        match response.status().is_success() {
            true => Ok(()),
            false => Err(refused("upload to", &shown, response).await),
        }
    };
    if size <= BLOCK as u64 {
        let body = rx.recv().await.transpose().map_err(read_error)?.unwrap_or_default();
        let response = put(dest.blob(&name, ""), body, true).await.map_err(|e| unanswered("upload to", &shown, e))?;
        check(response).await?;
    } else {
        let mut ids = Vec::new();
        while let Some(block) = rx.recv().await {
            let block = block.map_err(read_error)?;
            let id = base64::engine::general_purpose::STANDARD.encode(format!("{:08}", ids.len()));
            let query = format!("comp=block&blockid={}", crate::model::percent_encode(&id));
            let response =
                put(dest.blob(&name, &query), block, false).await.map_err(|e| unanswered("upload to", &shown, e))?;
            check(response).await?;
            ids.push(id);
        }
        let list: String = ids.iter().map(|id| format!("<Latest>{id}</Latest>")).collect();
        let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>{list}</BlockList>").into_bytes();
        let response = put(dest.blob(&name, "comp=blocklist"), body, false)
            .await
            .map_err(|e| unanswered("upload to", &shown, e))?;
        check(response).await?;
    }
    let _ = reader.await;
    Ok(size)
}
