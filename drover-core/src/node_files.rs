//! A node's files, as the API and the CLI reach them from any host: the client of the file service
//! every node runs (`node::files`). Each request is signed with the key the node published in
//! Redis (HMAC-SHA256 over the method, the path and an expiry a minute ahead), so only someone
//! who can read the account's status store reads or removes a node's files.

use crate::staging::beneath::Entry;
use crate::status::FileService;
use crate::{Error, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries a request's signature: `<expiry ms>.<base64url MAC>`.
pub(crate) const SIGNATURE: &str = "x-drover-signature";
/// The header a file read answers with: `<total size> <modified ms> <changed ms> <mode>`.
pub(crate) const STAT: &str = "x-drover-stat";
/// How long a signature stays valid.
const VALID_MS: i64 = 60_000;
/// The most entries one listing returns.
pub(crate) const LIST_LIMIT: usize = 100_000;

/// The signature of `method target` valid until `expires_ms`.
pub(crate) fn sign(key: &[u8], method: &str, target: &str, expires_ms: i64) -> String {
    let mac = mac(key, method, target, expires_ms).map(|m| m.finalize().into_bytes().to_vec()).unwrap_or_default();
    format!("{expires_ms}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
}

fn mac(key: &[u8], method: &str, target: &str, expires_ms: i64) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for part in [method, target, &expires_ms.to_string()] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    Some(mac)
}

/// Whether `signature` signs `method target` with `key` and has not expired.
pub(crate) fn verify(key: &[u8], method: &str, target: &str, signature: &str, now_ms: i64) -> bool {
    let Some((expires, given)) = signature.split_once('.') else { return false };
    let Ok(expires_ms) = expires.parse::<i64>() else { return false };
    let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given) else { return false };
    let fresh = now_ms <= expires_ms && expires_ms <= now_ms + 5 * VALID_MS;
    fresh && mac(key, method, target, expires_ms).is_some_and(|m| m.verify_slice(&given).is_ok())
}

/// `rel` with each path segment percent-encoded.
fn encode_path(rel: &str) -> String {
    rel.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The service's path for `op` on `rel` beneath `root` (both relative to the node's directory):
/// `/v1/<op>/<rel>?root=<root>[&recursive=true]`.
pub(crate) fn target(op: &str, root: &str, rel: &str, recursive: bool) -> String {
    let root = percent_encoding::utf8_percent_encode(root, percent_encoding::NON_ALPHANUMERIC);
    let recursive = if recursive { "&recursive=true" } else { "" };
    format!("/v1/{op}/{}?root={root}{recursive}", encode_path(rel))
}

/// Checks a path beneath a node's or a task's directory: relative, no `.` or `..` components.
pub fn check_path(what: &str, rel: &str) -> Result<()> {
    use std::path::Component;
    let path = std::path::Path::new(rel);
    if rel.contains('\0') || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        let shown: String = rel.chars().take(200).collect();
        return Err(Error::invalid(format!("{what} {shown:?}: must be a relative path without '.' or '..'")));
    }
    Ok(())
}

/// The part `bytes=START-[END]` (an HTTP `Range`, Azure's `ocp-range`) of a file of `size`
/// bytes asks for: its first byte and its length.
pub fn byte_range(range: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || Error::Invalid(format!("range {range:?}: expected bytes=START-[END] within {size} bytes"));
    let (start, end) = range.trim().strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let last = size.checked_sub(1).ok_or_else(bad)?;
    let end = match end.trim() {
        "" => last,
        e => e.parse::<u64>().map_err(|_| bad())?.min(last),
    };
    if start > end {
        return Err(bad());
    }
    Ok((start, end - start + 1))
}

/// A file read from a node or storage: what it is, the range read and its bytes.
pub struct FileRead {
    pub entry: Entry,
    /// The first byte read and how many.
    pub start: u64,
    pub length: u64,
    pub body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
}

/// A connection to one node's file service, for the files beneath one of its directories.
pub struct NodeFiles {
    http: reqwest::Client,
    service: FileService,
    node: String,
    /// The directory paths resolve beneath, relative to the node's: "" (node files) or a task's.
    root: String,
}

impl NodeFiles {
    /// The files of the node `node` (Azure's node files): its part of the work directory.
    pub fn node(node: &str, service: FileService) -> Result<NodeFiles> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Internal(format!("an HTTP client: {e}")))?;
        Ok(NodeFiles { http, service, node: node.into(), root: String::new() })
    }

    /// The files of a task the node `node` ran: nothing it reaches leads out of the task's
    /// directory (a link the task made to elsewhere on the node is refused).
    pub fn task(node: &str, service: FileService, job: &str, task: &str) -> Result<NodeFiles> {
        Ok(NodeFiles { root: crate::node::task_path(job, task), ..NodeFiles::node(node, service)? })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        op: &str,
        rel: &str,
        recursive: bool,
        range: Option<&str>,
    ) -> Result<reqwest::Response> {
        check_path("file path", rel)?;
        let target = target(op, &self.root, rel, recursive);
        let signature = sign(&self.service.key, method.as_str(), &target, crate::model::now_ms() + VALID_MS);
        let url = format!("{}{target}", self.service.url.trim_end_matches('/'));
        let mut request = self.http.request(method, &url).header(SIGNATURE, signature);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::State(format!("node {:?} does not serve its files now ({e}); try again", self.node))
        };
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let why = response.text().await.unwrap_or_default();
        Err(match status.as_u16() {
            404 => Error::NotFound { kind: "file", id: rel.into() },
            400 => Error::Invalid(why),
            409 => Error::State(why),
            _ => unreachable(&format!("{status}: {why}")),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response, what: &str) -> Result<T> {
        let bad = |e: &dyn std::fmt::Display| Error::Internal(format!("node {:?}: {what}: {e}", self.node));
        let body = response.bytes().await.map_err(|e| bad(&e))?;
        serde_json::from_slice(&body).map_err(|e| bad(&e))
    }

    /// What `rel` is.
    pub async fn stat(&self, rel: &str) -> Result<Entry> {
        let response = self.send(reqwest::Method::GET, "stat", rel, false, None).await?;
        self.json(response, "a stat reply").await
    }

    /// Reads the file `rel`, or the part `range` (`bytes=START-[END]`) of it.
    pub async fn read(&self, rel: &str, range: Option<&str>) -> Result<FileRead> {
        use futures_util::TryStreamExt;
        let response = self.send(reqwest::Method::GET, "file", rel, false, range).await?;
        let stat = response.headers().get(STAT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut fields = stat.split(' ');
        let mut num = || fields.next().and_then(|f| f.parse::<i64>().ok()).unwrap_or(0);
        let (size, modified_ms, changed_ms) = (u64::try_from(num()).unwrap_or(0), num(), num());
        let mode = stat.rsplit(' ').next().unwrap_or("0100644").to_string();
        let length = response.content_length().unwrap_or(size);
        let start = match range {
            Some(range) => byte_range(range, size)?.0,
            None => 0,
        };
        let entry = Entry { name: rel.into(), is_directory: false, size, modified_ms, changed_ms, mode };
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok(FileRead { entry, start, length, body: Box::new(tokio_util::io::StreamReader::new(stream)) })
    }

    /// The entries of the directory `rel` (and beneath it, with `recursive`).
    pub async fn list(&self, rel: &str, recursive: bool) -> Result<Vec<Entry>> {
        let response = self.send(reqwest::Method::GET, "list", rel, recursive, None).await?;
        self.json(response, "a listing").await
    }

    /// Removes `rel` (a directory only when empty, or with `recursive`).
    pub async fn remove(&self, rel: &str, recursive: bool) -> Result<()> {
        self.send(reqwest::Method::DELETE, "file", rel, recursive, None).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_method_path_and_expiry() {
        let key = b"0123456789abcdef0123456789abcdef";
        let now = 1_000_000;
        let sig = sign(key, "GET", "/v1/file/a", now + VALID_MS);
        assert!(verify(key, "GET", "/v1/file/a", &sig, now));
        assert!(!verify(key, "DELETE", "/v1/file/a", &sig, now));
        assert!(!verify(key, "GET", "/v1/file/b", &sig, now));
        assert!(!verify(b"another key", "GET", "/v1/file/a", &sig, now));
        assert!(!verify(key, "GET", "/v1/file/a", &sig, now + VALID_MS + 1), "expired");
        let far = sign(key, "GET", "/v1/file/a", now + 10 * VALID_MS);
        assert!(!verify(key, "GET", "/v1/file/a", &far, now), "valid too long");
        assert!(!verify(key, "GET", "/v1/file/a", "garbage", now));
    }

    #[test]
    fn ranges_are_clamped_to_the_file() {
        assert_eq!(byte_range("bytes=2-4", 10).unwrap(), (2, 3));
        assert_eq!(byte_range("bytes=2-", 10).unwrap(), (2, 8));
        assert_eq!(byte_range("bytes=2-99", 10).unwrap(), (2, 8));
        for bad in ["bytes=10-", "bytes=5-2", "2-4", "bytes=a-b", "bytes=0-"] {
            let size = if bad == "bytes=0-" { 0 } else { 10 };
            assert!(byte_range(bad, size).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(
            target("file", "jobs/j/t", "wd/a b/ü.txt", false),
            "/v1/file/wd/a%20b/%C3%BC%2Etxt?root=jobs%2Fj%2Ft"
        );
        assert_eq!(target("list", "", "", true), "/v1/list/?root=&recursive=true");
        for bad in ["../x", "wd/../../x", "/etc/passwd", "./x", "a\0b"] {
            assert!(check_path("file path", bad).is_err(), "{bad}");
        }
        check_path("file path", "wd/a b.txt").unwrap();
        check_path("file path", "").unwrap();
    }
}
