//! Shared Key authentication as Azure Batch checks it: `Authorization: SharedKey <account>:<base64
//! HMAC-SHA256>` over the verb, eleven standard headers, the `ocp-*` headers, `/<account><path>`
//! and the query. The SDKs build that string in slightly different ways (Python signs parameter
//! names as sent and `Content-Length: 0` on bodyless requests; .NET lower-cases names and leaves 0
//! empty), so each variant is tried. A request more than 15 minutes from now by `ocp-date` is refused.

use crate::reply::ApiError;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The headers signed, in order, after the verb.
const SIGNED: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// How far a request's date may be from now.
const SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The account served and its keys (primary, and optionally secondary), decoded.
pub(crate) struct Keys {
    pub(crate) account: String,
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("account", &self.account).field("keys", &self.keys.len()).finish()
    }
}

impl Keys {
    /// The keys as Azure gives them (base64); errors name the setting, never the key.
    pub(crate) fn new(account: &str, primary: &str, secondary: Option<&str>) -> anyhow::Result<Keys> {
        let mut keys = Vec::new();
        for (name, key) in [("the primary key", Some(primary)), ("the secondary key", secondary)] {
            let Some(key) = key else { continue };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| anyhow::anyhow!("{name}: not base64 (an Azure Batch account key is)"))?;
            if decoded.len() < 16 {
                anyhow::bail!("{name}: shorter than 16 bytes");
            }
            keys.push(decoded);
        }
        Ok(Keys { account: account.to_string(), keys })
    }

    /// The accounts of a key file (mode 600): lines `<account> <key> [<secondary key>]`, `#`
    /// comments; errors name the line, never a key.
    pub(crate) fn from_file(path: &std::path::Path) -> anyhow::Result<Vec<Keys>> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--accounts-file {shown}: {e}"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            anyhow::bail!("--accounts-file {shown}: readable by others; chmod 600 it");
        }
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--accounts-file {shown}: {e}"))?;
        let mut accounts: Vec<Keys> = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let (account, primary, secondary) = match words.as_slice() {
                [a, k] => (*a, *k, None),
                [a, k, k2] => (*a, *k, Some(*k2)),
                _ => anyhow::bail!("--accounts-file {shown}: line {n}: expected `<account> <key> [<secondary key>]`"),
            };
            if accounts.iter().any(|k| k.account == account) {
                anyhow::bail!("--accounts-file {shown}: line {n}: account {account:?} appears twice");
            }
            let keys = Keys::new(account, primary, secondary)
                .map_err(|e| anyhow::anyhow!("--accounts-file {shown}: line {n}: {e}"))?;
            accounts.push(keys);
        }
        if accounts.is_empty() {
            anyhow::bail!("--accounts-file {shown}: no account in it");
        }
        Ok(accounts)
    }

    /// Accepts the request if one of the keys signed it, now.
    pub(crate) fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        let refused = |why: &str| ApiError::auth(why);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let auth = header("authorization").ok_or_else(|| refused("the request is not signed (no Authorization)"))?;
        let (account, signature) = auth
            .strip_prefix("SharedKey ")
            .and_then(|rest| rest.rsplit_once(':'))
            .ok_or_else(|| refused("Authorization is not `SharedKey <account>:<signature>`"))?;
        if account != self.account {
            return Err(refused(&format!("account {account:?} is not served here")));
        }
        let date =
            header("ocp-date").or_else(|| header("date")).ok_or_else(|| refused("the request has no ocp-date"))?;
        let when =
            chrono::DateTime::parse_from_rfc2822(date).map_err(|_| refused("ocp-date is not an RFC 1123 date"))?;
        if (chrono::Utc::now() - when.with_timezone(&chrono::Utc)).abs() > SKEW {
            return Err(refused("the request's ocp-date is more than 15 minutes from now"));
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| refused("the signature is not base64"))?;
        let signed = variants(method, uri, headers, &self.account)
            .iter()
            .any(|text| self.keys.iter().any(|key| verifies(key, text, &given)));
        if signed {
            Ok(())
        } else {
            Err(refused("the signature does not match any of the account's keys"))
        }
    }
}

fn verifies(key: &[u8], text: &str, given: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { return false };
    mac.update(text.as_bytes());
    mac.verify_slice(given).is_ok()
}

/// The strings a client may have signed for this request.
fn variants(method: &Method, uri: &Uri, headers: &HeaderMap, account: &str) -> Vec<String> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let sent_length = value("content-length");
    let lengths: Vec<&str> =
        if sent_length.is_empty() || sent_length == "0" { vec!["0", ""] } else { vec![sent_length] };
    let mut ocp: Vec<(String, &str)> = headers
        .iter()
        .filter_map(|(name, v)| {
            let name = name.as_str().to_ascii_lowercase();
            let v = v.to_str().ok().filter(|v| !v.is_empty())?;
            name.starts_with("ocp-").then_some((name, v))
        })
        .collect();
    ocp.sort();
    let ocp: String = ocp.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (n, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(n), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for lower in [false, true] {
        let mut query: Vec<(String, &str)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (if lower { n.to_ascii_lowercase() } else { n.clone() }, v.as_str()))
            .collect();
        query.sort();
        let query: String = query.iter().map(|(n, v)| format!("\n{n}:{v}")).collect();
        for length in &lengths {
            let standard: Vec<&str> =
                SIGNED.iter().map(|h| if *h == "content-length" { length } else { value(h) }).collect();
            out.push(format!("{method}\n{}\n{ocp}/{account}{}{query}", standard.join("\n"), uri.path()));
        }
    }
    out
}

/// A query component, percent-decoded (`+` is a space, as in forms).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn sign(text: &str) -> String {
        let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn request(auth: &str, date: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ocp-date", date.parse().unwrap());
        h.insert("authorization", auth.parse().unwrap());
        h
    }

    #[test]
    fn what_the_python_sdk_signs_is_accepted_and_nothing_else() {
        let keys = Keys::new("acct", KEY, None).unwrap();
        let date = chrono::Utc::now().to_rfc2822().replace("+0000", "GMT");
        let uri: Uri = "/jobs/j%201/tasks?api-version=2025-06-01&%24filter=state%20eq%20%27active%27".parse().unwrap();
        // As azure-batch 15.1.0 builds it: Content-Length 0 on a bodyless DELETE, names as sent.
        let text = format!(
            "DELETE\n\n\n0\n\n\n\n\n\n\n\n\nocp-date:{date}\n/acct/jobs/j%201/tasks\n$filter:state eq 'active'\napi-version:2025-06-01"
        );
        let headers = request(&format!("SharedKey acct:{}", sign(&text)), &date);
        assert!(keys.check(&Method::DELETE, &uri, &headers).is_ok());
        // Another verb, another account, an old date: refused.
        assert!(keys.check(&Method::GET, &uri, &headers).is_err());
        let other = request(&format!("SharedKey other:{}", sign(&text)), &date);
        assert!(keys.check(&Method::DELETE, &uri, &other).is_err());
        let old = (chrono::Utc::now() - chrono::TimeDelta::minutes(20)).to_rfc2822();
        let stale = format!("DELETE\n\n\n0\n\n\n\n\n\n\n\n\nocp-date:{old}\n/acct/jobs/j%201/tasks\n$filter:state eq 'active'\napi-version:2025-06-01");
        let e =
            keys.check(&Method::DELETE, &uri, &request(&format!("SharedKey acct:{}", sign(&stale)), &old)).unwrap_err();
        assert!(e.values.iter().any(|(_, v)| v.contains("15 minutes")), "{:?}", e.values);
    }
}
