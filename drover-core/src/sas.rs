//! SAS tokens at rest: before a record is written, the query of every URL in it that carries a
//! signature (`sig=`, an Azure SAS) is sealed with the account's keys ([`crate::signing`]); it is
//! opened only where a transfer uses it. Redis, `show` and logs never hold the credential in clear.

use crate::signing::Signer;
use crate::{Error, Result};
use std::borrow::Cow;

/// What a sealed query starts with: `?drover-sealed=<key-id>.<sealed query>`.
const SEALED: &str = "drover-sealed=";

/// Whether the http(s) URL `url` carries a SAS signature in its query.
fn has_sas(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("sig=")))
}

/// The JSON `text` with the query of every SAS URL in it sealed; `None` if it holds none.
/// Without keys a SAS is refused: drover does not store one in clear. `what` names the record.
pub fn seal_json(text: &str, signer: Option<&Signer>, what: &str) -> Result<Option<String>> {
    if !text.contains("sig=") {
        return Ok(None);
    }
    rewrite_strings(text, "sig=", what, |url| {
        if !has_sas(url) {
            return Ok(None);
        }
        let Some(signer) = signer else {
            return Err(Error::invalid(format!(
                "{what}: {} carries a SAS token, which drover stores only sealed with the account's keys: \
                 give them (--signing-key-file)",
                crate::config::redact_url(url)
            )));
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let sealed = signer.seal(query).map_err(|e| Error::Internal(format!("{what}: {e}")))?;
        Ok(Some(format!("{base}?{SEALED}{sealed}")))
    })
}

/// The JSON `text` of a stored record with every sealed query opened (to compare it with what
/// a client sent again); `None` if it holds none.
pub fn open_json(text: &str, signer: Option<&Signer>, what: &str) -> Result<Option<String>> {
    if !text.contains(SEALED) {
        return Ok(None);
    }
    rewrite_strings(text, SEALED, what, |url| Ok(Some(open_url(url, signer, what)?.into_owned())))
}

/// `text` (JSON) with every string that holds `mark` and that `rewrite` changes replaced.
fn rewrite_strings(
    text: &str,
    mark: &str,
    what: &str,
    mut rewrite: impl FnMut(&str) -> Result<Option<String>>,
) -> Result<Option<String>> {
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let end = (i + 1).min(bytes.len());
        i = end;
        let Some(literal) = text.get(start..end).filter(|l| l.contains(mark)) else { continue };
        let value: String =
            serde_json::from_str(literal).map_err(|e| Error::Internal(format!("{what}: a stored string: {e}")))?;
        let Some(new) = rewrite(&value)? else { continue };
        out.push_str(&text[copied..start]);
        out.push_str(&serde_json::to_string(&new).unwrap_or_default());
        copied = end;
    }
    if copied == 0 {
        return Ok(None);
    }
    out.push_str(&text[copied..]);
    Ok(Some(out))
}

/// The query `query` (without its `?`) as the transfer needs it: a sealed one opened.
pub fn open_query<'a>(query: &'a str, signer: Option<&Signer>, what: &str) -> Result<Cow<'a, str>> {
    let Some(sealed) = query.strip_prefix(SEALED) else { return Ok(Cow::Borrowed(query)) };
    let signer = signer.ok_or_else(|| {
        Error::invalid(format!("{what}: its SAS is sealed and this node has no keys to open it (--signing-key-file)"))
    })?;
    signer.unseal(sealed).map(Cow::Owned).map_err(|e| Error::invalid(format!("{what}: its sealed SAS: {e}")))
}

/// The URL `url` as the transfer needs it: a sealed query opened.
pub fn open_url<'a>(url: &'a str, signer: Option<&Signer>, what: &str) -> Result<Cow<'a, str>> {
    match url.split_once('?') {
        Some((base, query)) if query.starts_with(SEALED) => {
            Ok(Cow::Owned(format!("{base}?{}", open_query(query, signer, what)?)))
        }
        _ => Ok(Cow::Borrowed(url)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> Signer {
        Signer::parse("k 0123456789abcdef0123456789abcdef", "a").unwrap()
    }

    #[test]
    fn only_sas_queries_are_sealed_and_they_open_again() {
        let url = "https://acct.blob.core.windows.net/c/in.txt?sv=2022-11-02&sp=r&sig=abc%2Bdef%3D";
        let text = serde_json::json!({"resourceFiles": [{"httpUrl": url}, {"httpUrl": "https://x/y?sigma=1"}],
            "note": "sig= in prose", "commandLine": "echo \"sig=\\\\\""})
        .to_string();
        let sealed = seal_json(&text, Some(&keys()), "task t").unwrap().unwrap();
        assert!(!sealed.contains("abc%2Bdef") && !sealed.contains("sv=2022"), "{sealed}");
        let v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let stored = v["resourceFiles"][0]["httpUrl"].as_str().unwrap();
        assert!(stored.starts_with("https://acct.blob.core.windows.net/c/in.txt?drover-sealed=k."), "{stored}");
        assert_eq!(open_url(stored, Some(&keys()), "httpUrl").unwrap(), url);
        assert_eq!(open_json(&sealed, Some(&keys()), "task t").unwrap().unwrap(), text);
        // Everything else is as it was, in the same order.
        let before: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["resourceFiles"][1], before["resourceFiles"][1]);
        assert_eq!((&v["note"], &v["commandLine"]), (&before["note"], &before["commandLine"]));
        assert_eq!(seal_json("{\"a\":\"https://x/y?sigma=1\"}", None, "t").unwrap(), None);
        assert_eq!(open_url("https://x/y?sv=1", None, "u").unwrap(), "https://x/y?sv=1");
    }

    #[test]
    fn a_sas_without_keys_is_refused_without_showing_it() {
        let text = r#"{"httpUrl":"https://a.blob.core.windows.net/c/b?sv=1&sig=SECRET"}"#;
        let e = seal_json(text, None, "task \"t\"").unwrap_err().to_string();
        assert!(e.contains("task \"t\"") && e.contains("--signing-key-file") && !e.contains("SECRET"), "{e}");
        let sealed = seal_json(text, Some(&keys()), "t").unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let e = open_url(v["httpUrl"].as_str().unwrap(), None, "httpUrl").unwrap_err().to_string();
        assert!(e.contains("no keys to open it"), "{e}");
    }
}
