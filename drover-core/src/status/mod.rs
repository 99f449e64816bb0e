//! The Redis status store: the key layout, and the records of pools, jobs, tasks and nodes.
//!
//! Key layout ([`Keys`] owns it). Account `A`'s keys start with `drover:A:`; each job's keys
//! start with `drover:{A:J}:`, a hash tag, so one job's transitions touch one Redis Cluster slot.
//! - `drover:A:pools` set of pool ids; `drover:A:pool:P` the pool's JSON; `drover:A:pool:P:jobs`
//!   its active jobs, `:nodes` its nodes, `:samples` / `:autoscale` its autoscale history.
//! - `drover:A:pool:P:stats` hash of monotonic counters the transitions keep for the monitor:
//!   `done.success`, `done.failure.<code>`, `retries`, `requeues`, `bytes.in`, `bytes.out`, and
//!   the `dur.*` / `wait.*` histograms (`b<i>` per bucket, `sum` in ms, `count`).
//! - `drover:A:jobs` set of job ids.
//! - `drover:{A:J}:job` hash: `spec`, `state`, `pool`, times, `env`, the settings the scripts read,
//!   and the task counters (`active`, `running`, `completed`, `succeeded`, `failed`, `s.*` for slots).
//! - `drover:{A:J}:tasks` list of the job's task ids, in the order they were added.
//! - `drover:{A:J}:t:T` the task record (JSON, see [`TaskRecord`]); its `attempt` fences writers.
//! - Dependencies (jobs with `usesTaskDependencies`): `drover:{A:J}:dep:P` list of the tasks
//!   waiting on parent P (each its task message); `:wait` hash task -> parents still awaited;
//!   `:blocked` hash task -> the parent whose failure blocks it; `:parents` set of the P with a list.
//! - `drover:{A:J}:parked` list (and `:parkedmsg` hash of their messages) of tasks held back by
//!   `maxParallelTasks`; `:killed` set of running tasks their nodes must kill (`task terminate`);
//!   `:nodes` hash node -> its job preparation and release runs; `:queued` sorted set of the
//!   tasks waiting in the queue, by since when.
//! - `drover:{A:J}:out:T` the outbox of T's last transition (`out:@B` of submission batch B): the
//!   messages of tasks it made runnable, which the caller publishes and then clears (a crash in
//!   between publishes them again); `:outboxes` the outboxes not yet cleared, by since when.
//! - `drover:A:node:N` node N's work directory; `drover:A:node:N:info` hash: the node's pool,
//!   host, slots, version, state, tasks and start task; `:jobs` the jobs it prepared;
//!   `:alive` present while node N heartbeats (a short TTL).
//! - `drover:A:apps` set of application ids; `drover:A:app:X` hash: `v:<version>` -> the
//!   package's JSON, `default` -> the default version.

mod application;
mod attempt;
mod autoscale;
mod job;
mod node;
mod outbox;
mod pool;
mod progress;
mod scripts;
mod stats;
mod task;

pub use application::{Application, PackageVersion};
pub use attempt::{AttemptRef, Completion, Outcome, Start, Started};
pub use job::{JobBacklog, Watch};
pub use node::{NodeBeat, NodeJoin};
pub use outbox::Outbox;
pub use progress::{count, JobOutlook, PoolNodes, Stall, StallReason};
pub use scripts::BUCKETS_MS;
pub use stats::{Histogram, PoolStats};
pub use task::{terminated_failure, TaskRecord, Termination};

use crate::{Config, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// How long a node's heartbeat lasts without renewal; a node silent for longer is presumed dead
/// and its tasks may be taken over.
pub const NODE_LEASE: Duration = Duration::from_secs(15);

/// How many attempts of a task may be lost with their node before the task is recorded as
/// failed instead of run again (a task that kills its node must not loop).
pub const MAX_LOST_ATTEMPTS: u32 = 5;

/// The names of an account's keys: the one owner of the key layout (see the module docs).
#[derive(Debug, Clone)]
pub struct Keys {
    account: String,
    prefix: String,
}

impl Keys {
    /// The key names for `account`.
    pub fn new(account: &str) -> Self {
        Keys { account: account.into(), prefix: format!("drover:{account}:") }
    }
    /// The account these keys belong to.
    pub fn account(&self) -> &str {
        &self.account
    }
    fn pools(&self) -> String {
        format!("{}pools", self.prefix)
    }
    fn pool(&self, pool: &str) -> String {
        format!("{}pool:{pool}", self.prefix)
    }
    /// One of a pool's keys: `jobs` (its active jobs), `nodes`, `stats`, `samples`, `autoscale`.
    pub(crate) fn pool_part(&self, pool: &str, part: &str) -> String {
        format!("{}pool:{pool}:{part}", self.prefix)
    }
    fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }
    /// The keys of one job.
    pub(crate) fn job(&self, job: &str) -> JobKeys {
        JobKeys { prefix: format!("drover:{{{}:{job}}}:", self.account) }
    }
    /// What a node's keys start with; `<this>N:alive` is node N's heartbeat.
    fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }
    fn node_info(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }
    fn node_part(&self, node: &str, part: &str) -> String {
        format!("{}node:{node}:{part}", self.prefix)
    }
    fn node_alive(&self, node: &str) -> String {
        self.node_part(node, "alive")
    }
    fn applications(&self) -> String {
        format!("{}apps", self.prefix)
    }
    fn application(&self, application: &str) -> String {
        format!("{}app:{application}", self.prefix)
    }

    /// The keys a task transition of `task` (of `job`, on `pool`) is given, in the order
    /// `lua/includes/task_keys.lua` names them.
    fn task_transition(&self, pool: &str, job: &str, task: &str) -> [String; 13] {
        let j = self.job(job);
        [
            j.task(task),
            j.hash(),
            j.part("queued"),
            j.part("wait"),
            j.part("blocked"),
            j.part("parents"),
            j.part("parked"),
            j.part("parkedmsg"),
            j.part("killed"),
            j.outbox(task),
            j.part("outboxes"),
            self.pool_part(pool, "stats"),
            self.pool_part(pool, "jobs"),
        ]
    }
}

/// The keys of one job. They share the hash tag `{A:J}`, so every transition of the job's tasks
/// touches one Redis Cluster slot (what spans jobs is listed in ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub(crate) struct JobKeys {
    prefix: String,
}

impl JobKeys {
    /// The job's hash: spec, state, settings the scripts read, counters.
    fn hash(&self) -> String {
        format!("{}job", self.prefix)
    }
    /// The job's task ids, in the order they were added.
    fn tasks(&self) -> String {
        format!("{}tasks", self.prefix)
    }
    /// A task's record.
    fn task(&self, task: &str) -> String {
        format!("{}t:{task}", self.prefix)
    }
    /// The outbox of a task's last transition.
    fn outbox(&self, task: &str) -> String {
        format!("{}out:{task}", self.prefix)
    }
    /// The outbox of one batch of a submission (`@` keeps it apart from task ids).
    fn batch_outbox(&self, batch: &str) -> String {
        format!("{}out:@{batch}", self.prefix)
    }
    /// The tasks waiting on parent `parent`.
    fn dependents(&self, parent: &str) -> String {
        format!("{}dep:{parent}", self.prefix)
    }
    /// One of the job's other keys: `queued`, `wait`, `blocked`, `parents`, `parked`,
    /// `parkedmsg`, `killed`, `nodes`, `outboxes`.
    pub(crate) fn part(&self, part: &str) -> String {
        format!("{}{part}", self.prefix)
    }
}

/// A flag as the scripts take it.
fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// A connection to the status store for one account. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct StatusStore {
    con: ConnectionManager,
    keys: Keys,
}

impl StatusStore {
    /// Connects to Redis and loads the transition scripts.
    pub async fn connect(config: &Config) -> Result<Self> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(2);
        let con = ConnectionManager::new_with_config(client, manager_config).await?;
        let store = StatusStore { con, keys: Keys::new(&config.account) };
        store.load_scripts().await?;
        Ok(store)
    }

    /// Loads the Lua scripts so pipelined EVALSHA calls find them (again after a Redis restart).
    pub async fn load_scripts(&self) -> Result<()> {
        let mut pipe = redis::pipe();
        for s in scripts::all() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(s.source());
        }
        let _: Vec<String> = pipe.query_async(&mut self.con()).await?;
        Ok(())
    }

    /// The account's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Marks `node` alive for [`NODE_LEASE`]; a node calls this well within the lease.
    pub async fn heartbeat(&self, node: &str) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(self.keys.node_alive(node))
            .arg(crate::model::now_ms())
            .arg("PX")
            .arg(NODE_LEASE.as_millis() as u64)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Forgets `node`'s heartbeat at once (a node that left cleanly).
    pub async fn node_gone(&self, node: &str) -> Result<()> {
        let _: () = redis::cmd("DEL").arg(self.keys.node_alive(node)).query_async(&mut self.con()).await?;
        Ok(())
    }
}
