//! Signed tasks: a MAC (HMAC-SHA256, truncated to 128 bits) over what decides what a worker runs,
//! so that someone who can write to Redis or publish to the broker cannot change it.
//!
//! The keys come from a file (`--signing-key-file`), one `<key-id> <secret>` per line: the first
//! key signs, every key verifies (rotation: add the new key first on the workers, then on the
//! submitters; drop the old one once nothing it signed is left). A signature is
//! `<key-id>.<base64url of the MAC>` over the account and the fields, each length-prefixed. A
//! worker with keys refuses what is unsigned or does not verify; without keys it signs and checks
//! nothing.
//!
//! The same keys seal secrets at rest (the SAS tokens of Azure Blob URLs, [`crate::sas`]):
//! XChaCha20-Poly1305 under a key derived from the secret and the account.

use crate::{Error, Result};
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit as _, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// What is signed: each kind is its own domain, so no signature of one passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A task's stored spec: ["job id", "task id", spec JSON].
    Task,
    /// A task message: ["job id", "task id", slots, stage].
    Message,
    /// A job's stored spec: ["job id", spec JSON].
    Job,
    /// A task's token for the Batch API: ["job id"].
    Token,
    /// A pool's spec: ["pool id", spec JSON].
    Pool,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::Task => b"drover task v1",
            Kind::Message => b"drover message v1",
            Kind::Job => b"drover job v1",
            Kind::Pool => b"drover pool v1",
            Kind::Token => b"drover token v1",
        }
    }
}

/// The shortest secret a key file may hold.
const MIN_SECRET: usize = 32;
const MAC_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;

/// The signing keys of an account.
pub struct Signer {
    account: String,
    /// (id, secret); the first signs.
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Signer").field("account", &self.account).field("keys", &ids).finish()
    }
}

impl Signer {
    /// Reads the key file at `path` (refused if others may read it, as ssh does).
    pub fn load(path: &Path, account: &str) -> Result<Signer> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("signing-key-file {shown}"), e))?;
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "signing-key-file {shown}: readable by others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("signing-key-file {shown}"), e))?;
        Signer::parse(&text, account).map_err(|e| Error::invalid(format!("signing-key-file {shown}: {e}")))
    }

    /// Parses a key file's text; errors name the line (never the secret).
    pub fn parse(text: &str, account: &str) -> std::result::Result<Signer, String> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((id, secret)) = line.split_once(char::is_whitespace) else {
                return Err(format!("line {n}: expected `<key-id> <secret>`"));
            };
            let secret = secret.trim();
            if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("line {n}: the key id must be 1 to 32 letters, digits, '-' or '_'"));
            }
            if secret.len() < MIN_SECRET {
                return Err(format!("line {n}: key {id:?}'s secret is shorter than {MIN_SECRET} characters"));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("line {n}: key {id:?} appears twice"));
            }
            keys.push((id.to_string(), secret.as_bytes().to_vec()));
        }
        if keys.is_empty() {
            return Err("no key in it".into());
        }
        Ok(Signer { account: account.to_string(), keys })
    }

    fn mac(&self, secret: &[u8], kind: Kind, fields: &[&str]) -> [u8; MAC_BYTES] {
        let mut out = [0u8; MAC_BYTES];
        // HMAC takes a key of any length.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return out };
        for part in std::iter::once(self.account.as_bytes()).chain(fields.iter().map(|f| f.as_bytes())) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(kind.tag());
        out.copy_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        out
    }

    /// The cipher that seals secrets with `secret`: its key is derived from the secret, so no
    /// signature can be turned into it.
    fn cipher(&self, secret: &[u8]) -> XChaCha20Poly1305 {
        let key = self.mac_full(secret, b"drover seal v1");
        XChaCha20Poly1305::new(&key.into())
    }

    fn mac_full(&self, secret: &[u8], tag: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return out };
        mac.update(&(self.account.len() as u64).to_be_bytes());
        mac.update(self.account.as_bytes());
        mac.update(tag);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// `plain` sealed with the first key (a random nonce each time): `<key-id>.<base64url>`.
    pub fn seal(&self, plain: &str) -> std::result::Result<String, String> {
        let (id, secret) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.cipher(secret).encrypt(&nonce, plain.as_bytes()).map_err(|_| "cannot seal".to_string())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{id}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// What [`Signer::seal`] sealed, with whichever key it names; else why not.
    pub fn unseal(&self, sealed: &str) -> std::result::Result<String, String> {
        let (id, body) = sealed.split_once('.').ok_or("it is malformed")?;
        let Some((_, secret)) = self.keys.iter().find(|(k, _)| k == id) else {
            let shown: String = id.chars().take(32).collect();
            return Err(format!("it is sealed with key {shown:?}, which this node does not have"));
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| "it is malformed")?;
        if bytes.len() < NONCE_BYTES {
            return Err("it is malformed".into());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher(secret)
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| format!("it does not open with key {id:?}: it was changed after it was sealed"))?;
        String::from_utf8(plain).map_err(|_| "it is malformed".into())
    }

    /// A token for the Batch API that reaches the job `job` (while the job is active: the API
    /// checks): `drover1.<base64url job id>.<signature>`.
    pub fn job_token(&self, job: &str) -> String {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(job);
        format!("drover1.{id}.{}", self.sign(Kind::Token, &[job]))
    }

    /// The job a token made by [`Signer::job_token`] reaches; else why it is refused.
    pub fn token_job(&self, token: &str) -> std::result::Result<String, String> {
        let mut parts = token.splitn(3, '.');
        let (Some("drover1"), Some(id), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("it is not a drover token".into());
        };
        let job = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .ok()
            .and_then(|j| String::from_utf8(j).ok())
            .ok_or("it is not a drover token")?;
        self.verify(Kind::Token, &[&job], Some(sig))?;
        Ok(job)
    }

    /// The signature of `fields` with the first key.
    pub fn sign(&self, kind: Kind, fields: &[&str]) -> String {
        let (id, secret) = &self.keys[0];
        format!("{id}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(secret, kind, fields)))
    }

    /// Checks `sig` over `fields`; the error says why it does not verify.
    pub fn verify(&self, kind: Kind, fields: &[&str], sig: Option<&str>) -> std::result::Result<(), String> {
        let Some(sig) = sig.filter(|s| !s.is_empty()) else { return Err("it is not signed".into()) };
        let Some((id, given)) = sig.split_once('.') else { return Err("its signature is malformed".into()) };
        let Some((_, secret)) = self.keys.iter().find(|(k, _)| k == id) else {
            let shown: String = id.chars().take(32).collect();
            return Err(format!("it is signed with key {shown:?}, which this node does not have"));
        };
        let given = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(given)
            .map_err(|_| "its signature is malformed".to_string())?;
        let expected = self.mac(secret, kind, fields);
        // Compared in constant time.
        let same =
            given.len() == MAC_BYTES && given.iter().zip(expected.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        if same {
            Ok(())
        } else {
            Err(format!("its signature (key {id:?}) does not verify: it was changed after it was signed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str =
        "# rotated monthly\nnew 0123456789abcdef0123456789abcdef-new\nold 0123456789abcdef0123456789abcdef-old\n";

    #[test]
    fn a_signature_verifies_only_for_what_was_signed() {
        let s = Signer::parse(KEYS, "acct").unwrap();
        let sig = s.sign(Kind::Task, &["j", "t", "{\"commandLine\":\"/bin/true\"}"]);
        assert!(sig.starts_with("new."));
        assert_eq!(s.verify(Kind::Task, &["j", "t", "{\"commandLine\":\"/bin/true\"}"], Some(&sig)), Ok(()));
        let changed = s.verify(Kind::Task, &["j", "t", "{\"commandLine\":\"id\"}"], Some(&sig));
        assert!(changed.unwrap_err().contains("changed after it was signed"));
        // Another kind, another account, moved field boundaries: none verifies.
        assert!(s.verify(Kind::Message, &["j", "t", "{\"commandLine\":\"/bin/true\"}"], Some(&sig)).is_err());
        let other = Signer::parse(KEYS, "other").unwrap();
        assert!(other.verify(Kind::Task, &["j", "t", "{\"commandLine\":\"/bin/true\"}"], Some(&sig)).is_err());
        assert!(s.verify(Kind::Task, &["jt", "", "{\"commandLine\":\"/bin/true\"}"], Some(&sig)).is_err());
        assert_eq!(s.verify(Kind::Task, &["j"], None).unwrap_err(), "it is not signed");
        assert!(s.verify(Kind::Task, &["j"], Some("gone.AAAA")).unwrap_err().contains("\"gone\""));
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_only_and_unchanged() {
        let s = Signer::parse(KEYS, "acct").unwrap();
        let sealed = s.seal("sv=2022&sig=SECRET").unwrap();
        assert!(sealed.starts_with("new.") && !sealed.contains("SECRET"));
        assert_ne!(sealed, s.seal("sv=2022&sig=SECRET").unwrap(), "a fresh nonce each time");
        assert_eq!(s.unseal(&sealed).unwrap(), "sv=2022&sig=SECRET");
        // After rotation the old key still opens; another account's keys do not.
        let rotated = Signer::parse(&format!("newer 0123456789abcdef0123456789abcdef-nwr\n{KEYS}"), "acct").unwrap();
        assert_eq!(rotated.unseal(&sealed).unwrap(), "sv=2022&sig=SECRET");
        let other = Signer::parse(KEYS, "other").unwrap();
        assert!(other.unseal(&sealed).unwrap_err().contains("changed after it was sealed"));
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.unseal(std::str::from_utf8(&bytes).unwrap()).is_err());
        assert!(s.unseal("gone.AAAA").unwrap_err().contains("\"gone\""));
    }

    #[test]
    fn a_job_token_names_its_job_and_nothing_else_passes() {
        let s = Signer::parse(KEYS, "acct").unwrap();
        let token = s.job_token("render");
        assert_eq!(s.token_job(&token).unwrap(), "render");
        let forged = token.replace(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("render"), "b3RoZXI");
        assert!(s.token_job(&forged).is_err(), "another job's id with this signature");
        assert!(Signer::parse(KEYS, "other").unwrap().token_job(&token).is_err());
        assert!(s.token_job("Bearer x").is_err());
    }

    #[test]
    fn an_old_key_still_verifies_after_rotation() {
        let old = Signer::parse("old 0123456789abcdef0123456789abcdef-old", "a").unwrap();
        let sig = old.sign(Kind::Message, &["j", "t", "1", "0"]);
        let rotated = Signer::parse(KEYS, "a").unwrap();
        assert_eq!(rotated.verify(Kind::Message, &["j", "t", "1", "0"], Some(&sig)), Ok(()));
    }

    #[test]
    fn bad_key_files_are_refused_by_line_without_their_secret() {
        for (text, want) in [
            ("", "no key"),
            ("k short", "line 1: key \"k\"'s secret is shorter"),
            ("\nk/1 0123456789abcdef0123456789abcdef", "line 2: the key id"),
            ("onlyid", "line 1: expected"),
            (
                "k 0123456789abcdef0123456789abcdef\nk 0123456789abcdef0123456789abcdeX",
                "line 2: key \"k\" appears twice",
            ),
        ] {
            let e = Signer::parse(text, "a").unwrap_err();
            assert!(e.contains(want) && !e.contains("0123456789"), "{text:?}: {e}");
        }
    }
}
