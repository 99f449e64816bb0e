//! A host of the test's own: a network namespace joined to the test's namespace by a veth pair on
//! a private /30 (10.231.x.y), with relays on the host side of the pair to the test's broker,
//! Redis and storage. A program started in it reaches those services only through the pair, so
//! the test can cut the host off the network (the link goes down: packets are lost, no
//! connection is closed) and bring it back. The namespace, and every process still in it, goes
//! when the fixture is dropped, even when the test fails.

use super::relay::Relay;
use std::process::Command;

pub struct Host {
    /// The namespace's name.
    pub netns: String,
    /// The host side of the veth pair (in the test's namespace).
    veth: String,
    /// The address the host reaches the test's services on.
    gateway: String,
    /// Relays from `gateway` to each service, by its `host:port`.
    relays: Vec<(String, Relay)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `host:port` of a URL (after any `user:pass@`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, a)| a)
}

impl Host {
    /// Host number `n` (0..64) of this test process, relaying to the services of `urls`.
    pub async fn start(n: u8, urls: &[&str]) -> Host {
        let pid = std::process::id();
        let (netns, veth) = (format!("drover-{pid}-{n}"), format!("dv{}h{n}", pid % 100_000));
        let inner = format!("dv{}n{n}", pid % 100_000);
        let base = (u32::from(n) * 4) % 256;
        let subnet = format!("10.231.{}", pid % 250);
        let (gateway, addr) = (format!("{subnet}.{}", base + 1), format!("{subnet}.{}", base + 2));
        ip(&["netns", "add", &netns]);
        // From here on, dropping the host removes what was made.
        let mut host = Host { netns, veth, gateway, relays: vec![] };
        ip(&["link", "add", &host.veth, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &host.netns]);
        ip(&["addr", "add", &format!("{}/30", host.gateway), "dev", &host.veth]);
        ip(&["link", "set", &host.veth, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &host.netns, "ip"], args].concat());
        inside(&["addr", "add", &format!("{addr}/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        for url in urls {
            let upstream = authority(url).to_string();
            let relay = Relay::start_on(&host.gateway, &upstream, 0).await;
            host.relays.push((upstream, relay));
        }
        host
    }

    /// `url` as seen from inside the host: its service's address replaced by its relay's.
    pub fn url(&self, url: &str) -> String {
        let upstream = authority(url);
        let (_, relay) = self.relays.iter().find(|(u, _)| u == upstream).expect("a relay for this service");
        url.replacen(upstream, &format!("{}:{}", self.gateway, relay.port), 1)
    }

    /// The command prefix that runs a program inside the host.
    pub fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.netns]
    }

    /// Cuts the host off: its link goes down, what it sends is lost, nothing is closed.
    pub fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    /// Brings the host back on the network.
    pub fn reconnect(&self) {
        ip(&["link", "set", &self.veth, "up"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.netns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
    }
}
