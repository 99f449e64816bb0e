//! Finding the store's master through Redis Sentinel, and following it when it moves.
//!
//! `redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER_NAME[/db]`: the hosts are the
//! sentinels; the user and password are the master's (the sentinels are asked without).

use crate::config::Redacted;
use crate::{Error, Result};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionAddr, RedisConnectionInfo};

/// The URL scheme of a store behind sentinels.
pub(super) const SCHEME: &str = "redis+sentinel://";

/// A parsed sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    pub(super) sentinels: Vec<(String, u16)>,
    pub(super) master: String,
    pub(super) db: i64,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl SentinelUrl {
    /// Parses `url`, or says which part is wrong (without its password).
    pub(super) fn parse(url: &str) -> Result<SentinelUrl> {
        let bad = |why: &str| Error::invalid(format!("redis-url ({}): {why}", Redacted(url)));
        let rest = url.strip_prefix(SCHEME).ok_or_else(|| bad("not a redis+sentinel:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no /MASTER_NAME after the sentinels"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (username, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            None => (None, None),
            Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), (!p.is_empty()).then(|| decode(p))),
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
        Ok(SentinelUrl { sentinels, master: master.to_string(), db, username, password })
    }

    /// A client that asks the sentinels for the master (and checks its role) on each call.
    pub(super) fn client(&self) -> Result<SentinelClient> {
        let nodes: Vec<ConnectionAddr> =
            self.sentinels.iter().map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p)).collect();
        let mut info = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        Ok(SentinelClient::build(nodes, self.master.clone(), Some(node), SentinelServerType::Master)?)
    }
}

/// Percent-decodes a URL's user or password.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            (bytes[i] == b'%').then(|| s.get(i + 1..i + 3)).flatten().and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
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
            })
        );
        let plain = SentinelUrl::parse("redis+sentinel://h1/m").ok();
        assert_eq!(plain.map(|u| (u.sentinels, u.db, u.password)), Some((vec![("h1".into(), 26379)], 0, None)));
        for bad in ["redis+sentinel://h1:x/m", "redis+sentinel://h1:1", "redis+sentinel://:secret@h1:1/"] {
            let e = SentinelUrl::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("redis-url ("), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
