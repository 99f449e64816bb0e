//! Storage locations named in the wire types: `s3://bucket/key` URLs, and Azure Blob Storage
//! containers as Azure names them (`https://ACCOUNT.blob.core.windows.net/CONTAINER/path?SAS`,
//! or the emulator's `http://127.0.0.1:10000/ACCOUNT/CONTAINER?SAS`).

/// A parsed `s3://bucket/key` (or `s3://bucket/prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// Parses an `s3://` URL; the key may be empty (a whole bucket). Errors show the URL without
    /// its password or signature (an Azure SAS URL given by mistake keeps its `sig` hidden).
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = format!("{:?}", crate::config::redact_url(url));
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{shown} is not an s3:// URL"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(format!("{shown}: {bucket:?} is not a valid bucket name"));
        }
        check_key(key).map_err(|e| format!("{shown}: {e}"))?;
        Ok(S3Url { bucket: bucket.into(), key: key.into() })
    }

    /// This URL as a prefix: its key with one trailing `/` (or empty for a whole bucket).
    pub fn prefix(&self) -> String {
        as_prefix(&self.key)
    }
}

/// `key` with one trailing `/`, or empty when it is.
fn as_prefix(key: &str) -> String {
    match key.trim_end_matches('/') {
        "" => String::new(),
        k => format!("{k}/"),
    }
}

/// Refuses an object key or prefix with an empty, `.` or `..` segment (one trailing `/` is
/// allowed): such a key names no single place, and `..` would reach another prefix wherever keys
/// are read as paths.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    let key = key.strip_suffix('/').unwrap_or(key);
    if key.is_empty() {
        return Ok(());
    }
    match key.split('/').find(|s| s.is_empty() || *s == "." || *s == "..") {
        Some("") => Err("an empty path segment (//, or a leading /) is not allowed".into()),
        Some(s) => Err(format!("a {s:?} path segment is not allowed")),
        None => Ok(()),
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A container (or a path in one) of Azure Blob Storage, with the SAS that grants access.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobUrl {
    /// `scheme://host[:port]/[account/]container`, without a trailing `/`.
    pub container: String,
    /// The path in the container (no leading `/`; may be empty).
    pub path: String,
    /// The query string (the SAS), without its `?`.
    pub sas: String,
}

impl BlobUrl {
    /// Parses an http(s) container URL. The host names the account
    /// (`ACCOUNT.blob.core.windows.net`), or, for an IP address or `localhost` (the emulator),
    /// the first path segment does. Errors hide the SAS's signature.
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = format!("{:?}", crate::config::redact_url(url));
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "https" || *s == "http")
            .ok_or_else(|| format!("{shown} is not an http(s) URL"))?;
        let (rest, sas) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
        let path_style = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok();
        let mut segments = path.splitn(if path_style { 3 } else { 2 }, '/');
        let account = if path_style { segments.next().filter(|a| !a.is_empty()) } else { None };
        if path_style && account.is_none() {
            return Err(format!("{shown}: no account in the path (http://host:port/ACCOUNT/CONTAINER)"));
        }
        let container = segments.next().unwrap_or("");
        let valid = (3..=63).contains(&container.len())
            && container.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(format!("{shown}: {container:?} is not a valid container name"));
        }
        let path = segments.next().unwrap_or("").to_string();
        check_key(&path).map_err(|e| format!("{shown}: {e}"))?;
        let account = account.map(|a| format!("{a}/")).unwrap_or_default();
        Ok(BlobUrl { container: format!("{scheme}://{host}/{account}{container}"), path, sas: sas.into() })
    }

    /// This location as a prefix: its path with one trailing `/` (or empty for a container).
    pub fn prefix(&self) -> String {
        as_prefix(&self.path)
    }

    /// The URL of blob `name` of the container, with the SAS (`extra` query parameters first).
    pub fn blob(&self, name: &str, extra: &str) -> String {
        let encoded: Vec<String> = name.split('/').map(percent_encode).collect();
        self.with_query(&format!("{}/{}", self.container, encoded.join("/")), extra)
    }

    /// The container's own URL with `extra` query parameters and the SAS.
    pub fn container_with(&self, extra: &str) -> String {
        self.with_query(&self.container, extra)
    }

    fn with_query(&self, base: &str, extra: &str) -> String {
        match (extra.is_empty(), self.sas.is_empty()) {
            (true, true) => base.to_string(),
            (false, true) => format!("{base}?{extra}"),
            (true, false) => format!("{base}?{}", self.sas),
            (false, false) => format!("{base}?{extra}&{}", self.sas),
        }
    }
}

/// `text` with everything but unreserved characters percent-encoded (a URL path segment or
/// query value).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Shows the location without the SAS's signature.
impl std::fmt::Display for BlobUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = if self.path.is_empty() { self.container_with("") } else { self.blob(&self.path, "") };
        f.write_str(&crate::config::redact_url(&url))
    }
}

impl std::fmt::Debug for BlobUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobUrl({self})")
    }
}

/// Where a `storageContainerUrl` or an output's `containerUrl` points: an S3 prefix, or an Azure
/// Blob Storage container (http or https, with a SAS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    S3(S3Url),
    Blob(BlobUrl),
}

impl Container {
    /// Parses `url` by its scheme.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("https://") || url.starts_with("http://") {
            BlobUrl::parse(url).map(Container::Blob)
        } else {
            S3Url::parse(url).map(Container::S3).map_err(|e| format!("{e} or an Azure Blob container URL"))
        }
    }

    /// The key or blob path it names.
    pub fn key(&self) -> &str {
        match self {
            Container::S3(u) => &u.key,
            Container::Blob(b) => &b.path,
        }
    }

    /// The same container at `key`.
    pub fn at(&self, key: String) -> Container {
        match self {
            Container::S3(u) => Container::S3(S3Url { bucket: u.bucket.clone(), key }),
            Container::Blob(b) => Container::Blob(BlobUrl { path: key, ..b.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::S3Url;

    #[test]
    fn parses_s3_urls() {
        assert_eq!(S3Url::parse("s3://bucket/a/b").unwrap(), S3Url { bucket: "bucket".into(), key: "a/b".into() });
        assert_eq!(S3Url::parse("s3://bucket").unwrap().prefix(), "");
        assert_eq!(S3Url::parse("s3://bucket/p/").unwrap().prefix(), "p/");
        assert!(S3Url::parse("http://x/y").is_err());
        assert!(S3Url::parse("s3://Bad_Bucket/x").is_err());
    }

    #[test]
    fn parses_blob_container_urls() {
        use super::{BlobUrl, Container};
        let b = BlobUrl::parse("https://acct.blob.core.windows.net/data/in/x?sv=1&sig=S").unwrap();
        assert_eq!(
            (b.container.as_str(), b.path.as_str(), b.sas.as_str()),
            ("https://acct.blob.core.windows.net/data", "in/x", "sv=1&sig=S")
        );
        assert_eq!(b.blob("a b/c", "comp=x"), "https://acct.blob.core.windows.net/data/a%20b/c?comp=x&sv=1&sig=S");
        let e = BlobUrl::parse("http://127.0.0.1:10000/devstoreaccount1/c01?sig=S").unwrap();
        assert_eq!((e.container.as_str(), e.prefix()), ("http://127.0.0.1:10000/devstoreaccount1/c01", String::new()));
        assert!(e.to_string().contains("sig=***") && !e.to_string().contains("=S"));
        for bad in
            ["http://127.0.0.1:10000/acct", "https://a.blob.core.windows.net/UPPER?sig=S", "https://a.b/cc1/x/../y"]
        {
            assert!(BlobUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(Container::parse("s3://bucket/p"), Ok(Container::S3(_))));
        assert!(matches!(Container::parse("ftp://x/y"), Err(e) if e.contains("Azure Blob")));
    }

    #[test]
    fn refusals_hide_signatures() {
        for url in ["https://a.blob.core.windows.net/c?sv=1&sig=SECRET", "s3://bucket/a//b?sig=SECRET"] {
            let err = S3Url::parse(url).unwrap_err();
            assert!(err.contains("sig=***") && !err.contains("SECRET"), "{err}");
        }
    }
}
