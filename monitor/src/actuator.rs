//! Actuators turn a pool's target into running workers: `process` starts and stops local
//! `drover-worker` processes (one machine), `systemd` starts and stops instances of the template
//! unit `drover-worker@<pool>-<n>.service`. Scaling down never kills a task: with
//! `taskcompletion` (the default) a leaving worker finishes what it runs (SIGTERM, drain); with
//! `requeue` it hands its tasks back at once (SIGINT). Idle workers leave first.

use drover_core::model::node::NodeState;
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

/// One of a pool's workers that is not leaving: its instance number and node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) index: u32,
    pub(crate) node_id: String,
}

/// What the nodes say of a pool's workers: which have no broker connection (state `unknown`)
/// and how many tasks each runs.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    cut_off: HashSet<String>,
    running: HashMap<String, u32>,
    /// Nodes told to leave the pool (Azure's remove nodes): the first to stop.
    leaving: HashSet<String>,
}

impl Nodes {
    pub(crate) async fn read(store: &StatusStore, pool: &str) -> Nodes {
        match store.list_nodes(pool).await {
            Ok(nodes) => Nodes {
                cut_off: nodes.iter().filter(|n| n.state == NodeState::Unknown).map(|n| n.id.clone()).collect(),
                leaving: nodes.iter().filter(|n| n.state == NodeState::LeavingPool).map(|n| n.id.clone()).collect(),
                running: nodes.into_iter().map(|n| (n.id, n.running_tasks_count)).collect(),
            },
            Err(e) => {
                tracing::warn!(pool, error = %e, "cannot read the pool's nodes; counting every worker, choosing blindly");
                Nodes::default()
            }
        }
    }

    /// The members that serve the pool (every one but those cut off from the broker).
    pub(crate) fn live(&self, members: &[Member]) -> u32 {
        members.iter().filter(|m| !self.cut_off.contains(&m.node_id)).count() as u32
    }
}

/// What an actuator does to bring a pool to its target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Nothing,
    /// Start this many workers.
    Start(u32),
    /// Stop these members.
    Stop(Vec<u32>),
}

/// The step from `members` to `target` live workers. A worker cut off from the broker does not
/// count: it is replaced, but while the broker stays away the pool holds at most twice its target
/// (replacements that cannot reach it either are not replaced again), and once enough workers are
/// live the ones told to leave go first, then the cut-off ones, then idle ones, then those running
/// the fewest tasks.
pub(crate) fn plan(members: &[Member], nodes: &Nodes, target: u32) -> Plan {
    let live = nodes.live(members);
    let total = members.len() as u32;
    if live < target {
        let start = (target - live).min((2 * target).saturating_sub(total));
        return if start > 0 { Plan::Start(start) } else { Plan::Nothing };
    }
    if total == target {
        return Plan::Nothing;
    }
    let mut order: Vec<&Member> = members.iter().collect();
    order.sort_by_key(|m| {
        (
            !nodes.leaving.contains(&m.node_id),
            !nodes.cut_off.contains(&m.node_id),
            nodes.running.get(&m.node_id).copied().unwrap_or(0),
            std::cmp::Reverse(m.index),
        )
    });
    Plan::Stop(order.into_iter().take((total - target) as usize).map(|m| m.index).collect())
}

impl Actuator {
    /// Workers of `pool` that run, are not leaving, and reach the broker.
    pub(crate) async fn current(&mut self, store: &StatusStore, pool: &str) -> u32 {
        let members = self.members(pool).await;
        Nodes::read(store, pool).await.live(&members)
    }

    /// Workers of `pool` that run and are not leaving, live or not.
    pub(crate) async fn held(&mut self, pool: &str) -> u32 {
        self.members(pool).await.len() as u32
    }

    async fn members(&mut self, pool: &str) -> Vec<Member> {
        match self {
            Actuator::Process(p) => p.members(pool),
            Actuator::Systemd(s) => s.members(pool).await,
        }
    }

    /// Starts or stops workers until `target` of them serve `pool`.
    pub(crate) async fn scale(&mut self, store: &StatusStore, pool: &str, target: u32, leave: Leave) {
        let members = self.members(pool).await;
        let nodes = Nodes::read(store, pool).await;
        let plan = plan(&members, &nodes, target);
        if plan == Plan::Nothing {
            return;
        }
        tracing::info!(pool, workers = members.len(), live = nodes.live(&members), target, ?leave, "scaling");
        match (self, plan) {
            (_, Plan::Nothing) => {}
            (Actuator::Process(p), Plan::Start(n)) => p.start(pool, n),
            (Actuator::Process(p), Plan::Stop(indexes)) => p.stop(pool, &indexes, leave),
            (Actuator::Systemd(s), Plan::Start(n)) => s.start(pool, n).await,
            (Actuator::Systemd(_), Plan::Stop(indexes)) => Systemd::stop(pool, &indexes, leave).await,
        }
    }

    /// Stops every worker this actuator started (the monitor is leaving); systemd units stay.
    pub(crate) async fn shutdown(&mut self) {
        if let Actuator::Process(p) = self {
            p.shutdown().await;
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

    fn members(&mut self, pool: &str) -> Vec<Member> {
        self.reap(pool);
        let workers = self.workers.get(pool).into_iter().flatten();
        workers.filter(|w| !w.leaving).map(|w| Member { index: w.index, node_id: w.node_id.clone() }).collect()
    }

    fn start(&mut self, pool: &str, n: u32) {
        for _ in 0..n {
            if let Err(e) = self.spawn(pool) {
                tracing::error!(pool, error = %e, "cannot start a worker");
                return;
            }
        }
    }

    fn stop(&mut self, pool: &str, indexes: &[u32], leave: Leave) {
        let Some(workers) = self.workers.get_mut(pool) else { return };
        for w in workers.iter_mut().filter(|w| indexes.contains(&w.index)) {
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

    async fn members(&self, pool: &str) -> Vec<Member> {
        let units = self.units(pool).await;
        let node = |index| format!("{}-{pool}-{index}", self.host);
        units.into_iter().filter(|u| !u.leaving).map(|u| Member { index: u.index, node_id: node(u.index) }).collect()
    }

    async fn start(&self, pool: &str, n: u32) {
        let used: HashSet<u32> = self.units(pool).await.iter().map(|u| u.index).collect();
        for index in (1..).filter(|i| !used.contains(i)).take(n as usize) {
            systemctl(&["start", "--no-block", &Self::unit(pool, index)]).await;
        }
    }

    async fn stop(pool: &str, indexes: &[u32], leave: Leave) {
        for &index in indexes {
            let unit = Self::unit(pool, index);
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

    fn members(n: u32) -> Vec<Member> {
        (1..=n).map(|index| Member { index, node_id: format!("h-p-{index}") }).collect()
    }

    fn nodes(cut_off: &[u32], running: &[(u32, u32)]) -> Nodes {
        Nodes {
            cut_off: cut_off.iter().map(|i| format!("h-p-{i}")).collect(),
            running: running.iter().map(|(i, n)| (format!("h-p-{i}"), *n)).collect(),
            leaving: Default::default(),
        }
    }

    #[test]
    fn a_worker_cut_off_from_the_broker_is_not_counted_and_leaves_first() {
        assert_eq!(plan(&members(2), &nodes(&[], &[]), 2), Plan::Nothing);
        assert_eq!(plan(&members(2), &nodes(&[1], &[]), 2), Plan::Start(1));
        // The replacement is live: the cut-off worker goes, not a busy one.
        assert_eq!(plan(&members(3), &nodes(&[1], &[(2, 3), (3, 0)]), 2), Plan::Stop(vec![1]));
        // The broker is gone for all: at most twice the target, then no more.
        assert_eq!(plan(&members(3), &nodes(&[1, 2, 3], &[]), 2), Plan::Start(1));
        assert_eq!(plan(&members(4), &nodes(&[1, 2, 3, 4], &[]), 2), Plan::Nothing);
        // Shrinking: idle ones first, then the newest.
        assert_eq!(plan(&members(4), &nodes(&[], &[(1, 0), (2, 2), (3, 1), (4, 0)]), 2), Plan::Stop(vec![4, 1]));
    }

    #[test]
    fn a_node_told_to_leave_counts_until_it_goes_and_is_the_first_to_stop() {
        let mut told = nodes(&[], &[(1, 0), (2, 5), (3, 0)]);
        told.leaving.insert("h-p-2".into());
        // Told to leave before the target drops: no replacement is started meanwhile.
        assert_eq!(plan(&members(3), &told, 3), Plan::Nothing);
        // The target dropped: the busy node that was told goes, not an idle one.
        assert_eq!(plan(&members(3), &told, 2), Plan::Stop(vec![2]));
    }
}
