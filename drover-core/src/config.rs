//! Connection settings shared by every program, parsed once from flags and environment.

use std::fmt;

/// Where drover's services are and which account to act for. In help these flags stand under
/// their own heading, and the URLs' values from the environment are never shown (they may hold
/// passwords).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection (flags or environment)")]
pub struct Config {
    /// RabbitMQ node URLs: repeat the flag, or separate them with commas. A program uses the
    /// first that answers and fails over to the next when its node goes.
    #[arg(
        long,
        env = "DROVER_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub amqp_url: Vec<String>,
    /// Redis URL: redis://[user:pass@]host:port/db (rediss:// for TLS), or through Sentinel:
    /// redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER_NAME[/db] (rediss+sentinel://
    /// for TLS to the sentinels and the master).
    #[arg(
        long,
        env = "DROVER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        global = true,
        hide_env_values = true
    )]
    pub redis_url: String,
    /// How many Redis replicas must hold a worker's writes before it acks the message that
    /// caused them (Redis WAIT); default 1 with a redis+sentinel:// URL, else 0.
    #[arg(long, env = "DROVER_REDIS_WAIT_REPLICAS", value_name = "N", global = true)]
    pub redis_wait_replicas: Option<u32>,
    /// S3 endpoint; unset means AWS. When set, path-style addressing is used.
    #[arg(long, env = "DROVER_S3_ENDPOINT", global = true, hide_env_values = true)]
    pub s3_endpoint: Option<String>,
    /// The account's "auto-storage" bucket.
    #[arg(long, env = "DROVER_BUCKET", default_value = "drover", global = true)]
    pub bucket: String,
    /// The account: every key, queue and default storage prefix carries it.
    #[arg(long, env = "DROVER_ACCOUNT", default_value = "default", global = true)]
    pub account: String,
    /// A PEM file of certificate authorities to trust on amqps://, https:// (S3 and resource
    /// files) and rediss:// links, besides the system's or SSL_CERT_FILE's (for rediss://,
    /// instead of them).
    #[arg(long, env = "DROVER_CA_FILE", value_name = "PATH", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The account's signing keys (`<key-id> <secret>` per line, mode 600; the first signs): the
    /// submitter signs every task, a worker runs only tasks whose signature verifies.
    #[arg(long, env = "DROVER_SIGNING_KEY_FILE", value_name = "PATH", global = true)]
    pub signing_key_file: Option<std::path::PathBuf>,
}

impl Config {
    /// The broker nodes and the authorities to trust on them.
    pub fn broker(&self) -> crate::queue::Broker {
        crate::queue::Broker { urls: self.amqp_url.clone(), ca_file: self.ca_file.clone() }
    }

    /// The broker URLs as `DROVER_AMQP_URL` holds them (comma-separated), for a child process.
    pub fn amqp_url_list(&self) -> String {
        self.amqp_url.join(",")
    }

    /// Refuses an account name that would break key or queue names.
    pub fn validate(&self) -> crate::Result<()> {
        crate::model::validate_id("account", &self.account)?;
        if self.amqp_url.is_empty() {
            return Err(crate::Error::invalid("amqp-url: at least one broker URL is needed"));
        }
        for (i, url) in self.amqp_url.iter().enumerate() {
            crate::queue::parse_url(url, i)?;
        }
        if self.bucket.is_empty() {
            return Err(crate::Error::invalid("bucket: must not be empty"));
        }
        Ok(())
    }
}

/// A URL printed with its password replaced by `***`, for logs.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redact_url(self.0))
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`, whatever characters it
/// holds (`/`, `@`, `:`, `?`, `#` included), and the values of signing query parameters (an
/// Azure SAS's `sig`, `se`, `sp`, `st`, `sk*`; S3's `Signature`, `AWSAccessKeyId` and any
/// `X-Amz-*`; any `X-Goog-*`) with `***`, keeping their names. A URL without a password keeps
/// its user, host and path. When in doubt it hides more: without `://` (`amqp:u:pw@h`, a typo,
/// or `u:pw@h`) everything before the password's ':' counts as the user name.
pub fn redact_url(url: &str) -> String {
    let (head, rest) = url.find("://").map_or(("", url), |i| url.split_at(i + 3));
    match password_span(rest) {
        Some((colon, at)) => format!("{head}{}:***{}", &rest[..colon], redact_query(&rest[at..])),
        None => format!("{head}{}", redact_query(rest)),
    }
}

/// Where the password in `user:password@hosts/path?query` (a URL after its `scheme://`) starts
/// (its ':') and ends (its '@'). The user name ends at the first ':', before any '@', '/', '?'
/// or '#'. The password may hold any character, so it ends at the last '@' that is followed by
/// something shaped like hosts (`h`, `h:1`, `h1:1,h2:2`, `[::1]:1`) up to a path, query or
/// fragment: an '@' in a path or a query (`?to=a@b.com&x=1`) is not taken for one. Failing
/// that, it ends where a plain parser would end it (the last '@' before any '/', '?' or '#').
fn password_span(rest: &str) -> Option<(usize, usize)> {
    let colon = rest.find([':', '@', '/', '?', '#']).filter(|&i| rest[i..].starts_with(':'))?;
    let authority_end = |s: &str| s.find(['/', '?', '#']).unwrap_or(s.len());
    let hosts_follow = |after: &str| {
        after[..authority_end(after)].chars().all(|c| c.is_ascii_alphanumeric() || ".-_~%:,[]".contains(c))
    };
    let at = rest
        .rmatch_indices('@')
        .map(|(at, _)| at)
        .find(|&at| at > colon && hosts_follow(&rest[at + 1..]))
        .or_else(|| rest[..authority_end(rest)].rfind('@'))?;
    Some((colon, at))
}

/// Hides the values of a URL's signing query parameters.
fn redact_query(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else { return url.to_string() };
    let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _)) if signs(name) => format!("{name}=***"),
            _ => p.to_string(),
        })
        .collect();
    let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
    format!("{path}?{}{fragment}", params.join("&"))
}

/// Whether a query parameter (named as the server reads it: case and percent-escapes aside)
/// signs the URL or says who signed it.
fn signs(name: &str) -> bool {
    const SIGNING: [&str; 12] =
        ["sig", "se", "sp", "st", "skoid", "sktid", "skt", "ske", "sks", "skv", "signature", "awsaccesskeyid"];
    let name = percent_decoded(name).to_ascii_lowercase();
    SIGNING.contains(&name.as_str()) || name.starts_with("x-amz-") || name.starts_with("x-goog-")
}

/// `text` with its `%XX` escapes decoded (a malformed one is kept as it is).
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match hex.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact_url, Config};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn broker_urls_are_a_list_from_repeated_flags_or_commas() {
        let cli = Cli::try_parse_from([
            "drover",
            "--amqp-url",
            "amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f",
            "--amqp-url",
            "amqp://u:p@h3:5672/%2f",
        ]);
        let config = cli.map(|c| c.config).map_err(|e| e.to_string());
        let urls = config.as_ref().map(|c| c.amqp_url.clone());
        assert_eq!(
            urls,
            Ok(vec![
                "amqp://u:p@h1:5672/%2f".to_string(),
                "amqp://u:p@h2:5672/%2f".to_string(),
                "amqp://u:p@h3:5672/%2f".to_string()
            ])
        );
        assert!(config.as_ref().is_ok_and(|c| c.validate().is_ok()));
    }

    #[test]
    fn a_bad_broker_url_is_named_by_its_position_without_its_password() {
        for (urls, shown) in [
            ("amqp://u:secret@h1:5672/%2f,http://u:secret@h2/x", "amqp-url 2 (http://u:***@h2/x)"),
            // The parser's own error quotes this one whole.
            ("amqp:u:secret@h1:5672", "amqp-url 1 (amqp:***@h1:5672)"),
        ] {
            let cli = Cli::try_parse_from(["drover", "--amqp-url", urls]);
            let error = cli.map_err(|e| e.to_string()).and_then(|c| c.config.validate().map_err(|e| e.to_string()));
            let message = error.err().unwrap_or_default();
            assert!(message.starts_with(shown), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        // Any character a password may hold.
        for password in ["pa/ss", "p@ss", "p:ss", "p?ss", "p#ss", "/@:?#"] {
            let url = format!("amqp://u:{password}@h1:5672/%2f");
            assert_eq!(redact_url(&url), "amqp://u:***@h1:5672/%2f", "{password}");
        }
        assert_eq!(
            redact_url("redis+sentinel://u:s3cr/et@h1:26379,h2:26379/mymaster/0"),
            "redis+sentinel://u:***@h1:26379,h2:26379/mymaster/0"
        );
        assert_eq!(redact_url("rediss://:pw@h:6380/0"), "rediss://:***@h:6380/0");
        assert_eq!(redact_url("http://h:8080/a/b.txt"), "http://h:8080/a/b.txt");
    }

    #[test]
    fn signed_query_strings_are_redacted() {
        assert_eq!(
            redact_url("https://acct.blob.core.windows.net/c/f.txt?sv=2022-11-02&se=2026-12-05&sp=r&sig=SECRET%3D#x"),
            "https://acct.blob.core.windows.net/c/f.txt?sv=2022-11-02&se=***&sp=***&sig=***#x"
        );
        assert_eq!(
            redact_url("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&x=1"),
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1"
        );
        assert_eq!(redact_url("http://u:p@h/k?sig=s"), "http://u:***@h/k?sig=***");
    }

    #[test]
    fn an_at_sign_in_a_path_or_query_is_no_password_end() {
        // Without a password the URL stays as it is.
        for url in ["http://h:8080/p?to=a@b.com&x=1", "https://h/@scope/pkg", "amqp://u@h:5672/%2f", "h/k?to=a@b"] {
            assert_eq!(redact_url(url), url);
        }
        // Without `//` the password is still found.
        assert_eq!(redact_url("amqp:u:pw@h:5672"), "amqp:***@h:5672");
        assert_eq!(redact_url("u:p/w@h:5672/%2f"), "u:***@h:5672/%2f");
        // With one, its end is the '@' before the hosts, and the query is still redacted.
        assert_eq!(redact_url("http://u:p@h/k?to=a@b.com&sig=s"), "http://u:***@h/k?to=a@b.com&sig=***");
        assert_eq!(redact_url("amqp://u:p/w@[::1]:5672/%2f"), "amqp://u:***@[::1]:5672/%2f");
        assert_eq!(redact_url("amqp://u:p@s/s@h:5672/%2f"), "amqp://u:***@h:5672/%2f");
        assert_eq!(redact_url("http://u:p@odd+host!/k"), "http://u:***@odd+host!/k");
    }

    #[test]
    fn every_signing_parameter_is_redacted_by_name() {
        let sas = "https://a.blob.core.windows.net/c/f?sv=2022-11-02&st=1&se=2&sr=b&sp=r&skoid=OID&sktid=TID\
                   &skt=3&ske=4&sks=b&skv=5&sig=S";
        assert_eq!(
            redact_url(sas),
            "https://a.blob.core.windows.net/c/f?sv=2022-11-02&st=***&se=***&sr=b&sp=***&skoid=***&sktid=***\
             &skt=***&ske=***&sks=***&skv=***&sig=***"
        );
        // S3's older presigned URLs, Google's, and names as the server reads them.
        assert_eq!(
            redact_url("https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIA&Expires=1&Signature=S"),
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=***&Expires=1&Signature=***"
        );
        assert_eq!(
            redact_url("https://storage.googleapis.com/b/k?X-Goog-Credential=C&X-Goog-Signature=S"),
            "https://storage.googleapis.com/b/k?X-Goog-Credential=***&X-Goog-Signature=***"
        );
        assert_eq!(redact_url("http://h/k?SIG=S&%73ig=S&%7"), "http://h/k?SIG=***&%73ig=***&%7");
    }
}
