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
//! - `drover:{A:J}:t:T` the task record (MessagePack with one-letter names after a mark byte, see
//!   [`TaskRecord::encode`]); its `attempt` fences writers.
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
mod schedule;
mod scripts;
mod sentinel;
mod stats;
mod task;

pub use application::{file_sha256, Application, PackageVersion};
pub use attempt::{AttemptRef, Completion, Outcome, Start, Started};
pub use job::{JobBacklog, Watch};
pub use node::{BeatReply, FileService, NodeBeat, NodeJoin};
pub use outbox::Outbox;
pub use progress::{count, JobOutlook, PoolNodes, Stall, StallReason};
pub use schedule::DueJob;
pub use scripts::BUCKETS_MS;
pub use stats::{Histogram, PoolStats};
pub use task::{terminated_failure, TaskRecord, Termination};

use crate::retry::Patience;
use crate::{Config, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How long a node's heartbeat lasts without renewal; a node silent for longer is presumed dead
/// and its tasks may be taken over.
pub const NODE_LEASE: Duration = Duration::from_secs(15);

/// How many attempts of a task may be lost with their node before the task is recorded as
/// failed instead of run again (a task that kills its node must not loop).
pub const MAX_LOST_ATTEMPTS: u32 = 5;

/// Loads the Lua scripts on `con` so pipelined EVALSHA calls find them.
async fn load_scripts(con: &mut ConnectionManager) -> Result<()> {
    let mut pipe = redis::pipe();
    for s in scripts::all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(s.source());
    }
    let _: Vec<String> = pipe.query_async(con).await?;
    Ok(())
}

/// Asks the sentinels every [`MASTER_CHECK`] where the master is, and when it has moved, points
/// the store at the new one (its scripts loaded first). Ends with the last clone of the store.
async fn follow_master(
    link: Weak<Link>,
    mut sentinels: redis::sentinel::SentinelClient,
    mut master: redis::ConnectionAddr,
) {
    loop {
        tokio::time::sleep(MASTER_CHECK).await;
        let Some(link) = link.upgrade() else { return };
        let client = match sentinels.async_get_client().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "the sentinels name no master now");
                continue;
            }
        };
        let addr = client.get_connection_info().addr().clone();
        if addr == master {
            continue;
        }
        let moved = async {
            let mut new = manager(client).await?;
            load_scripts(&mut new).await?;
            Ok::<_, crate::Error>(new)
        };
        match moved.await {
            Ok(new) => {
                tracing::warn!(from = %master, to = %addr, "the store's master moved; following it");
                *link.con.write().unwrap_or_else(|e| e.into_inner()) = new;
                link.epoch.fetch_add(1, AtomicOrdering::SeqCst);
                master = addr;
            }
            Err(e) => tracing::warn!(to = %addr, error = %e, "cannot reach the store's new master yet"),
        }
    }
}

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
    /// A job schedule's hash.
    fn schedule(&self, id: &str) -> String {
        format!("{}schedule:{id}", self.prefix)
    }
    /// The account's job schedules (a set of ids).
    fn schedules(&self) -> String {
        format!("{}schedules", self.prefix)
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

/// A connection to the status store for one account. Cheap to clone; reconnects by itself, and
/// behind sentinels follows the master when it moves.
#[derive(Clone)]
pub struct StatusStore {
    link: Arc<Link>,
    keys: Keys,
    /// How many replicas must hold a node's writes before it acks the message that caused them
    /// (Redis `WAIT`); 0: none.
    replicas: u32,
    /// The account's signing keys: tasks are signed when added and checked when started.
    signer: Option<Arc<crate::signing::Signer>>,
}

/// The connection to the master, replaced when the master moves.
struct Link {
    con: RwLock<ConnectionManager>,
    /// How many times the master has moved: writes made under an earlier epoch may have gone to
    /// a master that was demoted since (and be lost).
    epoch: AtomicU64,
}

/// How long a node waits for its writes to reach the replicas before it hands the message back.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// How long a program looks for the master through the sentinels before it gives up.
const MASTER_SEARCH: Duration = Duration::from_secs(30);

/// How often a store behind sentinels asks them where the master is.
const MASTER_CHECK: Duration = Duration::from_secs(1);

/// A client for `url`; a rediss:// one trusts `ca_file`'s authorities when given (else the
/// system's, or those of SSL_CERT_FILE).
fn client(url: &str, ca_file: Option<&std::path::Path>) -> Result<redis::Client> {
    match ca_file.filter(|_| url.starts_with("rediss://")) {
        Some(path) => {
            let pem = crate::tls::ca_pem(path)?.into_bytes();
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            Ok(redis::Client::build_with_tls(url, certs)?)
        }
        None => Ok(redis::Client::open(url)?),
    }
}

/// A connection manager for `client` (5 s to connect, 30 s for a reply).
async fn manager(client: redis::Client) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(2);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

impl StatusStore {
    /// Connects to Redis (`redis://`, or the master that sentinels name for
    /// `redis+sentinel://` or `rediss+sentinel://`) and loads the transition scripts.
    pub async fn connect(config: &Config) -> Result<Self> {
        let (client, follow) = if sentinel::is_sentinel_url(&config.redis_url) {
            // While a failover is under way the sentinels may name no master for a moment.
            let ca = config.ca_file.as_deref().map(crate::tls::ca_pem).transpose()?.map(String::into_bytes);
            let url = sentinel::SentinelUrl::parse(&config.redis_url)?;
            let sentinels = tokio::sync::Mutex::new(url.client(ca)?);
            let find = || async {
                let found = sentinels.lock().await.async_get_client().await;
                found.map_err(|e| crate::Error::StoreUnavailable(format!("the sentinels name no master: {e}")))
            };
            let client =
                crate::retry::transient("find the store's master", Patience::For(MASTER_SEARCH), || false, find)
                    .await?;
            (client, Some(sentinels.into_inner()))
        } else {
            (client(&config.redis_url, config.ca_file.as_deref())?, None)
        };
        let master = client.get_connection_info().addr().clone();
        let replicas = config.redis_wait_replicas.unwrap_or(u32::from(follow.is_some()));
        let link = Arc::new(Link { con: RwLock::new(manager(client).await?), epoch: AtomicU64::new(0) });
        let signer = match &config.signing_key_file {
            Some(path) => Some(Arc::new(crate::signing::Signer::load(path, &config.account)?)),
            None => None,
        };
        let store = StatusStore { link, keys: Keys::new(&config.account), replicas, signer };
        store.load_scripts().await?;
        if let Some(sentinels) = follow {
            tokio::spawn(follow_master(Arc::downgrade(&store.link), sentinels, master));
        }
        Ok(store)
    }

    /// The account's signing keys, if it has them.
    pub fn signer(&self) -> Option<&crate::signing::Signer> {
        self.signer.as_deref()
    }

    /// A record's JSON `text` as it is stored: every SAS in it sealed ([`crate::sas`]).
    fn sealed(&self, text: String, what: &str) -> Result<String> {
        Ok(crate::sas::seal_json(&text, self.signer(), what)?.unwrap_or(text))
    }

    /// Whether the stored spec `stored` is `given` (a client sending the same document again):
    /// its sealed SAS tokens are opened to compare.
    pub fn same_spec<T: serde::Serialize>(&self, stored: &T, given: &T) -> bool {
        let (Ok(stored), Ok(given)) = (serde_json::to_string(stored), serde_json::to_string(given)) else {
            return false;
        };
        match crate::sas::open_json(&stored, self.signer(), "a stored spec") {
            Ok(Some(opened)) => opened == given,
            Ok(None) => stored == given,
            Err(_) => false,
        }
    }

    /// A spec as it is stored: every SAS in it sealed.
    fn sealed_spec<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
        &self,
        spec: &T,
        what: &str,
    ) -> Result<T> {
        let text = serde_json::to_string(spec).map_err(|e| crate::Error::Internal(format!("{what}: {e}")))?;
        match crate::sas::seal_json(&text, self.signer(), what)? {
            Some(sealed) => serde_json::from_str(&sealed).map_err(|e| crate::Error::Internal(format!("{what}: {e}"))),
            None => Ok(spec.clone()),
        }
    }

    /// Loads the Lua scripts so pipelined EVALSHA calls find them (again after a Redis restart).
    pub async fn load_scripts(&self) -> Result<()> {
        load_scripts(&mut self.con()).await
    }

    /// The account's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn con(&self) -> ConnectionManager {
        self.link.con.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the master has moved since this store connected (see [`Self::replicated`]).
    pub fn epoch(&self) -> u64 {
        self.link.epoch.load(AtomicOrdering::SeqCst)
    }

    /// Whether the store waits for replicas (then a write whose outcome is unclear after a
    /// failover is handed back rather than taken as done).
    pub fn is_replicated(&self) -> bool {
        self.replicas > 0
    }

    /// Whether this store's writes so far, all made in `epoch`, are on the replicas a node must
    /// wait for (always, when it waits for none). False when the master has moved since `epoch`
    /// or the writes did not reach the replicas within [`REPLICA_WAIT`].
    pub async fn replicated(&self, epoch: u64) -> Result<bool> {
        if self.replicas == 0 {
            return Ok(true);
        }
        if self.epoch() != epoch {
            return Ok(false);
        }
        let acked: u32 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(REPLICA_WAIT.as_millis() as u64)
            .query_async(&mut self.con())
            .await?;
        Ok(acked >= self.replicas && self.epoch() == epoch)
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
