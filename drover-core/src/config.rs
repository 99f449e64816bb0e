//! Connection settings shared by every program, parsed once from flags and environment.

use std::fmt;

/// Where drover's services are and which account to act for. In help these flags stand under
/// their own heading, and the URLs' values from the environment are never shown (they may hold
/// passwords).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection (flags or environment)")]
pub struct Config {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "DROVER_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        global = true,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Redis URL.
    #[arg(
        long,
        env = "DROVER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        global = true,
        hide_env_values = true
    )]
    pub redis_url: String,
    /// S3 endpoint; unset means AWS. When set, path-style addressing is used.
    #[arg(long, env = "DROVER_S3_ENDPOINT", global = true, hide_env_values = true)]
    pub s3_endpoint: Option<String>,
    /// The account's "auto-storage" bucket.
    #[arg(long, env = "DROVER_BUCKET", default_value = "drover", global = true)]
    pub bucket: String,
    /// The account: every key, queue and default storage prefix carries it.
    #[arg(long, env = "DROVER_ACCOUNT", default_value = "default", global = true)]
    pub account: String,
}

impl Config {
    /// Refuses an account name that would break key or queue names.
    pub fn validate(&self) -> crate::Result<()> {
        crate::model::validate_id("account", &self.account)?;
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

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    }
}
