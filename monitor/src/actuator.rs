//! Actuators turn a pool's target into running workers: `process` starts and stops local
//! `drover-worker` processes (one machine), `systemd` starts and stops instances of the template
//! unit `drover-worker@<pool>-<n>.service`. Scaling down never kills a task: with
//! `taskcompletion` (the default) a leaving worker finishes what it runs (SIGTERM, drain); with
//! `requeue` it hands its tasks back at once (SIGINT). Idle workers leave first.

use drover_core::status::StatusStore;
use drover_core::Config;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;

/// How a worker leaves when the pool shrinks (`$NodeDeallocationOption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Finish running tasks first (taskcompletion, retaineddata).
    Drain,
    /// Hand running tasks back at once (requeue, terminate: drover never kills a task).
    Requeue,
}

impl Leave {
    pub(crate) fn from_option(option: Option<&str>) -> Leave {
        match option {
            Some("requeue" | "terminate") => Leave::Requeue,
            _ => Leave::Drain,
        }
    }
}

pub(crate) enum Actuator {
    Process(Box<Processes>),
    Systemd(Systemd),
}

impl Actuator {
    /// Workers of `pool` that run and are not leaving.
    pub(crate) async fn current(&mut self, pool: &str) -> u32 {
        match self {
            Actuator::Process(p) => p.current(pool),
            Actuator::Systemd(s) => s.units(pool).await.iter().filter(|u| !u.leaving).count() as u32,
        }
    }

    /// Starts or stops workers until `target` of them run for `pool`.
    pub(crate) async fn scale(&mut self, store: &StatusStore, pool: &str, target: u32, leave: Leave) {
        let current = self.current(pool).await;
        if target == current {
            return;
        }
        tracing::info!(pool, current, target, ?leave, "scaling");
        match self {
            Actuator::Process(p) => p.scale(store, pool, current, target, leave).await,
            Actuator::Systemd(s) => s.scale(store, pool, current, target, leave).await,
        }
    }

    /// Stops every worker this actuator started (the monitor is leaving); systemd units stay.
    pub(crate) async fn shutdown(&mut self) {
        if let Actuator::Process(p) = self {
            p.shutdown().await;
        }
    }
}

/// The node ids of `pool`'s workers in the order they should leave: idle ones first, then those
/// running the fewest tasks.
async fn leaving_order(store: &StatusStore, pool: &str) -> HashMap<String, u32> {
    match store.list_nodes(pool).await {
        Ok(nodes) => nodes.into_iter().map(|n| (n.id, n.running_tasks_count)).collect(),
        Err(e) => {
            tracing::warn!(pool, error = %e, "cannot read the pool's nodes; choosing workers blindly");
            HashMap::new()
        }
    }
}

struct Worker {
    index: u32,
    node_id: String,
    child: tokio::process::Child,
    leaving: bool,
}

/// Local worker processes, children of the monitor.
pub(crate) struct Processes {
    pub(crate) bin: PathBuf,
    pub(crate) work_dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) host: String,
    workers: HashMap<String, Vec<Worker>>,
}

impl Processes {
    pub(crate) fn new(bin: PathBuf, work_dir: PathBuf, config: Config, host: String) -> Self {
        Processes { bin, work_dir, config, host, workers: HashMap::new() }
    }

    fn reap(&mut self, pool: &str) {
        if let Some(workers) = self.workers.get_mut(pool) {
            workers.retain_mut(|w| match w.child.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(pool, node = %w.node_id, %status, "worker exited");
                    false
                }
                _ => true,
            });
        }
    }

    fn current(&mut self, pool: &str) -> u32 {
        self.reap(pool);
        self.workers.get(pool).map_or(0, |w| w.iter().filter(|w| !w.leaving).count() as u32)
    }

    async fn scale(&mut self, store: &StatusStore, pool: &str, current: u32, target: u32, leave: Leave) {
        if target > current {
            for _ in current..target {
                if let Err(e) = self.spawn(pool) {
                    tracing::error!(pool, error = %e, "cannot start a worker");
                    return;
                }
            }
            return;
        }
        let running = leaving_order(store, pool).await;
        let Some(workers) = self.workers.get_mut(pool) else { return };
        let mut candidates: Vec<&mut Worker> = workers.iter_mut().filter(|w| !w.leaving).collect();
        candidates.sort_by_key(|w| (running.get(&w.node_id).copied().unwrap_or(0), std::cmp::Reverse(w.index)));
        for w in candidates.into_iter().take((current - target) as usize) {
            let signal = match leave {
                Leave::Drain => nix::sys::signal::Signal::SIGTERM,
                Leave::Requeue => nix::sys::signal::Signal::SIGINT,
            };
            if let Some(pid) = w.child.id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
            tracing::info!(pool, node = %w.node_id, ?leave, "worker leaving the pool");
            w.leaving = true;
        }
    }

    fn spawn(&mut self, pool: &str) -> std::io::Result<()> {
        let workers = self.workers.entry(pool.to_string()).or_default();
        let used: HashSet<u32> = workers.iter().map(|w| w.index).collect();
        let index = (1..).find(|i| !used.contains(i)).unwrap_or(1);
        let node_id = format!("{}-{pool}-{index}", self.host);
        let logs = self.work_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{node_id}.log")))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["--pool-id", pool, "--node-id", &node_id, "--drain-timeout", "86400", "--exit-with-parent"])
            .arg("--work-dir")
            .arg(&self.work_dir)
            .env("DROVER_AMQP_URL", self.config.amqp_url_list())
            .env("DROVER_REDIS_URL", &self.config.redis_url)
            .env("DROVER_BUCKET", &self.config.bucket)
            .env("DROVER_ACCOUNT", &self.config.account)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(endpoint) = &self.config.s3_endpoint {
            cmd.env("DROVER_S3_ENDPOINT", endpoint);
        }
        if let Some(n) = self.config.redis_wait_replicas {
            cmd.env("DROVER_REDIS_WAIT_REPLICAS", n.to_string());
        }
        let child = cmd.spawn()?;
        tracing::info!(pool, node = %node_id, pid = child.id(), "worker started");
        workers.push(Worker { index, node_id, child, leaving: false });
        Ok(())
    }

    /// Asks every worker to drain and waits for them (up to a minute).
    async fn shutdown(&mut self) {
        for w in self.workers.values_mut().flatten() {
            if let Some(pid) = w.child.id() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        let all = self.workers.values_mut().flatten().map(|w| w.child.wait());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), futures_util::future::join_all(all)).await;
    }
}

/// One instance of the worker template unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) index: u32,
    pub(crate) leaving: bool,
}

/// Instances of `drover-worker@<pool>-<n>.service`, through systemctl.
pub(crate) struct Systemd {
    pub(crate) host: String,
}

impl Systemd {
    fn unit(pool: &str, index: u32) -> String {
        format!("drover-worker@{pool}-{index}.service")
    }

    /// The pool's units that are active or on their way out.
    async fn units(&self, pool: &str) -> Vec<Unit> {
        let pattern = format!("drover-worker@{pool}-*.service");
        let out = tokio::process::Command::new("systemctl")
            .args(["list-units", "--all", "--plain", "--no-legend", "--no-pager", &pattern])
            .output()
            .await;
        match out {
            Ok(o) => parse_units(pool, &String::from_utf8_lossy(&o.stdout)),
            Err(e) => {
                tracing::error!(error = %e, "systemctl list-units failed");
                vec![]
            }
        }
    }

    async fn scale(&mut self, store: &StatusStore, pool: &str, current: u32, target: u32, leave: Leave) {
        let units = self.units(pool).await;
        if target > current {
            let used: HashSet<u32> = units.iter().map(|u| u.index).collect();
            let free = (1..).filter(|i| !used.contains(i)).take((target - current) as usize);
            for index in free {
                systemctl(&["start", "--no-block", &Self::unit(pool, index)]).await;
            }
            return;
        }
        let running = leaving_order(store, pool).await;
        let mut candidates: Vec<&Unit> = units.iter().filter(|u| !u.leaving).collect();
        let node = |u: &Unit| format!("{}-{pool}-{}", self.host, u.index);
        candidates.sort_by_key(|u| (running.get(&node(u)).copied().unwrap_or(0), std::cmp::Reverse(u.index)));
        for u in candidates.into_iter().take((current - target) as usize) {
            let unit = Self::unit(pool, u.index);
            match leave {
                Leave::Drain => systemctl(&["stop", "--no-block", &unit]).await,
                Leave::Requeue => systemctl(&["kill", "--kill-whom=main", "--signal=SIGINT", &unit]).await,
            }
        }
    }
}

async fn systemctl(args: &[&str]) {
    match tokio::process::Command::new("systemctl").args(args).status().await {
        Ok(s) if s.success() => tracing::info!(?args, "systemctl"),
        Ok(s) => tracing::error!(?args, %s, "systemctl failed"),
        Err(e) => tracing::error!(?args, error = %e, "cannot run systemctl"),
    }
}

/// Parses `systemctl list-units --plain --no-legend` lines: UNIT LOAD ACTIVE SUB DESCRIPTION.
fn parse_units(pool: &str, text: &str) -> Vec<Unit> {
    let prefix = format!("drover-worker@{pool}-");
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (name, active, sub) = (cols.first()?, cols.get(2)?, cols.get(3)?);
            let index = name.strip_prefix(&prefix)?.strip_suffix(".service")?.parse().ok()?;
            match (*active, *sub) {
                ("active" | "activating" | "reloading", "stop-sigterm" | "stop" | "stop-post") => {
                    Some(Unit { index, leaving: true })
                }
                ("active" | "activating" | "reloading", _) => Some(Unit { index, leaving: false }),
                ("deactivating", _) => Some(Unit { index, leaving: true }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_systemctl_units() {
        let text = "drover-worker@render-1.service loaded active running drover worker render-1\n\
                    drover-worker@render-2.service loaded deactivating stop-sigterm drover worker render-2\n\
                    drover-worker@render-3.service loaded failed failed drover worker render-3\n\
                    drover-worker@render-x-4.service loaded active running other pool\n";
        assert_eq!(parse_units("render", text), [Unit { index: 1, leaving: false }, Unit { index: 2, leaving: true }]);
        assert_eq!(Leave::from_option(Some("requeue")), Leave::Requeue);
        assert_eq!(Leave::from_option(None), Leave::Drain);
    }
}
