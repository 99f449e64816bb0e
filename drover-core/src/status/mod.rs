//! The Redis status store: the key layout, and the records of pools, jobs, tasks and nodes.
//!
//! Key layout (every key carries the account `A`):
//! - `drover:A:pools` set of pool ids; `drover:A:pool:P` the pool's JSON.
//! - `drover:A:jobs` set of job ids; `drover:A:job:J` hash: `spec`, `state`, `pool`, times, `env`,
//!   and the task counters (`active`, `running`, `completed`, `succeeded`, `failed`, and `s.*` for slots).
//! - `drover:A:job:J:tasks` list of the job's task ids, in the order they were added.
//! - `drover:A:task:J:T` the task record (JSON, see [`TaskRecord`]); its `attempt` fences writers.
//! - Dependencies (jobs with `usesTaskDependencies`): `drover:A:dep:J:P` list of the tasks waiting
//!   on parent P (each its task message, JSON); `drover:A:job:J:wait` hash task -> parents still
//!   awaited; `drover:A:job:J:blocked` hash task -> the parent whose failure blocks it;
//!   `drover:A:job:J:parents` set of the P with a list.
//! - `drover:A:job:J:parked` list (and `:parkedmsg` hash of their messages) of tasks held back
//!   by `maxParallelTasks`; `drover:A:job:J:killed`
//!   set of running tasks their nodes must kill (`task terminate`).
//! - `drover:A:out:J:T` the outbox of T's last transition: tasks it made runnable, which the
//!   caller publishes before it acks and then clears (a crash in between republishes them).
//! - `drover:A:pool:P:nodes` set of the pool's nodes; `drover:A:node:N:info` hash: the node's
//!   pool, host, slots, version, state, running tasks and start task, written by the node.
//! - `drover:A:apps` set of application ids; `drover:A:app:X` hash: `v:<version>` -> the
//!   package's JSON, `default` -> the default version.
//! - `drover:A:pool:P:stats` hash of monotonic counters the transitions keep for the monitor:
//!   `done.success`, `done.failure.<code>`, `retries`, `requeues`, `bytes.in`, `bytes.out`, and
//!   the `dur.*` / `wait.*` histograms (`b<i>` per bucket, `sum` in ms, `count`).
//! - `drover:A:job:J:queued` sorted set of the job's tasks waiting in the queue, by since when.
//! - `drover:A:node:N` node N's work directory; `drover:A:node:N:alive` present while node N
//!   heartbeats (a short TTL).

mod application;
mod job;
mod node;
mod pool;
mod progress;
mod scripts;
mod stats;
mod task;

pub use application::{Application, PackageVersion};
pub use job::{JobBacklog, Watch};
pub use node::{NodeBeat, NodeJoin};
pub use progress::{count, JobOutlook, PoolNodes, Stall, StallReason};
pub use scripts::BUCKETS_MS;
pub use stats::{Histogram, PoolStats};
pub use task::{terminated_failure, Completion, Outcome, Start, TaskRecord, Termination};

use crate::{Config, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// How long a node's heartbeat lasts without renewal; a node silent for longer is presumed dead
/// and its tasks may be taken over.
pub const NODE_LEASE: Duration = Duration::from_secs(15);

/// How many attempts of a task may be lost with their node before the task is recorded as
/// failed instead of run again (a task that kills its node must not loop).
pub const MAX_LOST_ATTEMPTS: u32 = 5;

/// The names of an account's keys.
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
    fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }
    fn job(&self, job: &str) -> String {
        format!("{}job:{job}", self.prefix)
    }
    fn job_tasks(&self, job: &str) -> String {
        format!("{}job:{job}:tasks", self.prefix)
    }
    fn task(&self, job: &str, task: &str) -> String {
        format!("{}task:{job}:{task}", self.prefix)
    }
    /// The prefix of every key of the account (the scripts build dynamic keys from it).
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn outbox(&self, job: &str, task: &str) -> String {
        format!("{}out:{job}:{task}", self.prefix)
    }
    fn job_part(&self, job: &str, part: &str) -> String {
        format!("{}job:{job}:{part}", self.prefix)
    }
    fn dep_list(&self, job: &str, parent: &str) -> String {
        format!("{}dep:{job}:{parent}", self.prefix)
    }
    fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }
    fn node_info(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }
    fn applications(&self) -> String {
        format!("{}apps", self.prefix)
    }
    fn application(&self, application: &str) -> String {
        format!("{}app:{application}", self.prefix)
    }
    fn node_part(&self, node: &str, part: &str) -> String {
        format!("{}node:{node}:{part}", self.prefix)
    }
    pub(crate) fn pool_part(&self, pool: &str, part: &str) -> String {
        format!("{}pool:{pool}:{part}", self.prefix)
    }
    fn node_alive(&self, node: &str) -> String {
        format!("{}node:{node}:alive", self.prefix)
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
            pipe.cmd("SCRIPT").arg("LOAD").arg(&s.source);
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
