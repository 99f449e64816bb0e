//! A replicated Redis of the test's own: a master, a replica and three sentinels (the master
//! name is `drover`), as `redis-server` processes on free ports. The test can fail the master
//! over, or kill it (and start it again, to come back as the new master's replica, as an
//! operator would); every process is killed when the fixture is dropped, even when the test
//! fails.

use super::{eventually, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct ReplicatedRedis {
    dir: PathBuf,
    /// The ports of the master and replicas as started (the master first).
    data: Vec<u16>,
    sentinels: Vec<u16>,
}

/// The master name the sentinels monitor.
const MASTER: &str = "drover";

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ReplicatedRedis {
    /// Starts every process under `dir` and waits until the replicas are in sync and the
    /// sentinels agree on a quorum.
    pub async fn start(dir: &Path) -> ReplicatedRedis {
        let dir = dir.join("redis-ha");
        std::fs::create_dir_all(&dir).unwrap();
        let ha = ReplicatedRedis {
            dir,
            data: (0..2).map(|_| free_port()).collect(),
            sentinels: (0..3).map(|_| free_port()).collect(),
        };
        for (i, &port) in ha.data.iter().enumerate() {
            ha.start_data(port, (i > 0).then_some(ha.data[0]));
        }
        // down-after is 2 s, not 1: a sentinel pings at most once a second, and its first ping
        // on a new link (as after a switch to the promoted master) goes out a second after the
        // link is made, while the link counts as unanswered from then on. With 1 s the new master
        // could look down at once and be failed over again, here to the old one, restarted empty.
        for &port in &ha.sentinels {
            let conf = ha.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {MASTER} 127.0.0.1 {} 2\nsentinel down-after-milliseconds {MASTER} 2000\n\
                     sentinel failover-timeout {MASTER} 5000\nsentinel parallel-syncs {MASTER} 2\n",
                    ha.data[0]
                ),
            )
            .unwrap();
            ha.launch(&ha.common(port), Some(&conf));
        }
        let master = ha.data[0];
        eventually(Duration::from_secs(20), "the replica in sync", || async move {
            cli(master, &["info", "replication"]).matches("state=online").count() == 1
        })
        .await;
        let sentinel = ha.sentinels[0];
        eventually(Duration::from_secs(30), "the sentinels see each other and the replicas", || async move {
            let reply = cli(sentinel, &["sentinel", "master", MASTER]);
            let fields: Vec<&str> = reply.lines().map(str::trim).collect();
            let field = |name: &str| fields.iter().position(|f| *f == name).and_then(|i| fields.get(i + 1)).copied();
            field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
        })
        .await;
        ha
    }

    /// Starts a data node on `port`, a replica of `master` if given.
    fn start_data(&self, port: u16, master: Option<u16>) {
        let mut args = self.common(port);
        args.extend(["--save".into(), "".into(), "--appendonly".into(), "no".into()]);
        if let Some(master) = master {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        }
        self.launch(&args, None);
    }

    fn common(&self, port: u16) -> Vec<String> {
        let name = |what: &str| self.dir.join(format!("{port}.{what}")).to_string_lossy().into_owned();
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "yes", "--dir"]
            .into_iter()
            .map(String::from)
            .chain([self.dir.to_string_lossy().into_owned(), "--pidfile".into(), name("pid")])
            .chain(["--logfile".into(), name("log"), "--dbfilename".into(), format!("{port}.rdb")])
            .collect()
    }

    fn launch(&self, args: &[String], sentinel_conf: Option<&Path>) {
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = sentinel_conf {
            cmd.arg(conf).args(args).arg("--sentinel");
        } else {
            cmd.args(args);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// The `redis+sentinel://` URL of the store.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{MASTER}/0", hosts.join(","))
    }

    /// The port of the master the sentinels name now.
    pub fn master(&self) -> u16 {
        let reply = cli(self.sentinels[0], &["sentinel", "get-master-addr-by-name", MASTER]);
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Asks the sentinels for a failover and waits until they name another master.
    pub async fn failover(&self) -> u16 {
        let before = self.master();
        assert!(cli(self.sentinels[0], &["sentinel", "failover", MASTER]).starts_with("OK"));
        self.await_new_master(before).await
    }

    /// Kills the master (SIGKILL), waits until the sentinels have promoted the replica, then
    /// starts the killed node again (empty: no persistence here) as the new master's replica.
    pub async fn kill_master(&self) -> u16 {
        let before = self.master();
        self.kill(before);
        let after = self.await_new_master(before).await;
        self.start_data(before, Some(after));
        after
    }

    async fn await_new_master(&self, before: u16) -> u16 {
        eventually(Duration::from_secs(30), "the sentinels name a new master", || async move {
            let now = self.master();
            now != 0 && now != before
        })
        .await;
        self.master()
    }

    fn kill(&self, port: u16) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{port}.pid"))) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).stderr(std::process::Stdio::null()).status();
        }
    }
}

impl Drop for ReplicatedRedis {
    fn drop(&mut self) {
        for &port in self.data.iter().chain(&self.sentinels) {
            self.kill(port);
        }
    }
}
