//! Storage locations named in the wire types: `s3://bucket/key` URLs.

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
        let k = self.key.trim_end_matches('/');
        if k.is_empty() {
            String::new()
        } else {
            format!("{k}/")
        }
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
    fn refusals_hide_signatures() {
        for url in ["https://a.blob.core.windows.net/c?sv=1&sig=SECRET", "s3://bucket/a//b?sig=SECRET"] {
            let err = S3Url::parse(url).unwrap_err();
            assert!(err.contains("sig=***") && !err.contains("SECRET"), "{err}");
        }
    }
}
