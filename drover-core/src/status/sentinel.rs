//! Finding the store's master through Redis Sentinel, and following it when it moves.
//!
//! `redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER_NAME[/db]`: the hosts are the
//! sentinels; the user and password are the master's (the sentinels are asked without).
//! `rediss+sentinel://` speaks TLS to the sentinels and to the master.

use crate::config::{percent_decoded, Redacted};
use crate::{Error, Result};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, TlsMode};

/// The URL scheme of a store behind sentinels.
const SCHEME: &str = "redis+sentinel://";

/// The same over TLS.
const TLS_SCHEME: &str = "rediss+sentinel://";

/// Whether `url` names a store behind sentinels.
pub(super) fn is_sentinel_url(url: &str) -> bool {
    url.starts_with(SCHEME) || url.starts_with(TLS_SCHEME)
}

/// A parsed sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    pub(super) sentinels: Vec<(String, u16)>,
    pub(super) master: String,
    pub(super) db: i64,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) tls: bool,
}

impl SentinelUrl {
    /// Parses `url`, or says which part is wrong (without its password).
    pub(super) fn parse(url: &str) -> Result<SentinelUrl> {
        let bad = |why: &str| Error::invalid(format!("redis-url ({}): {why}", Redacted(url)));
        let (rest, tls) = match (url.strip_prefix(SCHEME), url.strip_prefix(TLS_SCHEME)) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(bad("not a redis+sentinel:// or rediss+sentinel:// URL")),
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no /MASTER_NAME after the sentinels"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (username, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            None => (None, None),
            Some((u, p)) => ((!u.is_empty()).then(|| percent_decoded(u)), (!p.is_empty()).then(|| percent_decoded(p))),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let (h, p) = host.rsplit_once(':').unwrap_or((host, "26379"));
            let port = p.parse().map_err(|_| bad(&format!("sentinel {host:?}: the port is not a number")))?;
            if h.is_empty() {
                return Err(bad(&format!("sentinel {host:?}: no host")));
            }
            sentinels.push((h.to_string(), port));
        }
        let (master, db) = match path.split_once('/') {
            Some((m, d)) => (m, d.parse().map_err(|_| bad(&format!("database {d:?} is not a number")))?),
            None => (path, 0),
        };
        if master.is_empty() {
            return Err(bad("no MASTER_NAME"));
        }
        Ok(SentinelUrl { sentinels, master: master.to_string(), db, username, password, tls })
    }

    /// A client that asks the sentinels for the master (and checks its role) on each call; over
    /// TLS it trusts `ca_pem`'s authorities when given (else the system's).
    pub(super) fn client(&self, ca_pem: Option<Vec<u8>>) -> Result<SentinelClient> {
        let nodes = self.sentinels.iter().map(|(host, port)| match self.tls {
            true => ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None },
            false => ConnectionAddr::Tcp(host.clone(), *port),
        });
        let mut builder = SentinelClientBuilder::new(nodes, self.master.clone(), SentinelServerType::Master)?
            .set_client_to_redis_db(self.db);
        if let Some(u) = &self.username {
            builder = builder.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.password {
            builder = builder.set_client_to_redis_password(p);
        }
        if self.tls {
            builder =
                builder.set_client_to_sentinel_tls_mode(TlsMode::Secure).set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(pem) = ca_pem {
                let certs = || redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                builder =
                    builder.set_client_to_sentinel_certificates(certs()).set_client_to_redis_certificates(certs());
            }
        }
        Ok(builder.build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::SentinelUrl;

    #[test]
    fn sentinel_urls_parse_as_other_clients_write_them() {
        let url = SentinelUrl::parse("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/2");
        assert_eq!(
            url.ok(),
            Some(SentinelUrl {
                sentinels: vec![("h1".into(), 26379), ("h2".into(), 26380)],
                master: "mymaster".into(),
                db: 2,
                username: Some("u".into()),
                password: Some("p@ss".into()),
                tls: false,
            })
        );
        let tls = SentinelUrl::parse("rediss+sentinel://h1:1/m").ok();
        assert_eq!(tls.map(|u| (u.tls, u.master)), Some((true, "m".into())));
        let plain = SentinelUrl::parse("redis+sentinel://h1/m").ok();
        assert_eq!(plain.map(|u| (u.sentinels, u.db, u.password)), Some((vec![("h1".into(), 26379)], 0, None)));
        for bad in ["redis+sentinel://h1:x/m", "redis+sentinel://h1:1", "redis+sentinel://:secret@h1:1/"] {
            let e = SentinelUrl::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("redis-url ("), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
