//! The node agent: joins a pool, consumes its queue with one prefetch per free slot, and runs
//! each task through its attempt (see [`attempt`]). It reconnects to the broker by itself, keeps a
//! heartbeat in Redis so others can tell it is alive, and drains on shutdown.

mod attempt;
mod job;
mod packages;
mod process;
mod retention;
mod start;
mod systemd;

pub use process::Exit;

use crate::model::node::NodeState;
use crate::model::TaskMessage;
use crate::queue::{self, Band, Topology, REASON_HEADER};
use crate::staging::Staging;
use crate::status::{NodeBeat, NodeJoin, StatusStore, NODE_LEASE};
use crate::{Config, Error, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub pool_id: String,
    /// Unique among live nodes; see [`default_node_id`].
    pub node_id: String,
    /// Slots; `None` takes the pool's `taskSlotsPerNode`.
    pub task_slots: Option<u32>,
    pub work_dir: PathBuf,
    /// How long running tasks may take to finish once the node is told to stop.
    pub drain_timeout: Duration,
    /// How long a transfer keeps retrying while storage is unavailable.
    pub storage_retry: Duration,
}

/// The host name plus a suffix unique on the host.
pub fn default_node_id() -> String {
    let host = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// What every attempt on this node shares.
pub(crate) struct NodeContext {
    pub(crate) config: Config,
    pub(crate) options: NodeOptions,
    pub(crate) store: StatusStore,
    pub(crate) staging: Staging,
    pub(crate) topology: Topology,
    /// Tasks this node runs now, as (job, task), each with the token that kills it.
    pub(crate) running: Mutex<HashMap<(String, String), CancellationToken>>,
    /// The jobs this node has run tasks of: their preparation, and what their release needs.
    pub(crate) jobs: job::NodeJobs,
    /// The application package versions unpacked here.
    pub(crate) packages: packages::NodePackages,
    /// Cancelled when running tasks must be handed back (drain timeout passed, or the node was
    /// told to leave at once).
    pub(crate) hand_back: CancellationToken,
    /// The node's slots, and those free now.
    pub(crate) slots: u32,
    pub(crate) free: Arc<tokio::sync::Semaphore>,
    /// The node's own state (`idle` stands for idle or running: the heartbeat tells them apart) and
    /// since when (ms).
    pub(crate) state: Mutex<(NodeState, i64)>,
    pub(crate) total_run: AtomicU64,
    pub(crate) total_succeeded: AtomicU64,
}

impl NodeContext {
    /// Moves the node to `state` and reports it at once (a heartbeat).
    pub(crate) async fn set_state(&self, state: NodeState) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state, crate::model::now_ms());
        }
        beat(self).await;
    }
}

/// Runs a node until `shutdown` is cancelled, then drains: no new task is taken, running ones get
/// the drain timeout to finish, and the rest are handed back to the queue. Cancelling
/// `hand_back` as well hands running tasks back at once (autoscaling's `requeue`).
pub async fn run(
    config: Config,
    options: NodeOptions,
    shutdown: CancellationToken,
    hand_back: CancellationToken,
) -> Result<()> {
    config.validate()?;
    crate::model::validate_id("pool id", &options.pool_id)?;
    let store = StatusStore::connect(&config).await?;
    let pool = store.get_pool(&options.pool_id).await?;
    let slots = options.task_slots.unwrap_or(pool.spec.task_slots_per_node).max(1);
    let staging = Staging::new(&config).await?.with_retry_budget(options.storage_retry);
    let ctx = Arc::new(NodeContext {
        topology: Topology::new(&config.account),
        config,
        options,
        store,
        staging,
        running: Mutex::new(HashMap::new()),
        jobs: job::NodeJobs::default(),
        packages: packages::NodePackages::default(),
        hand_back,
        slots,
        free: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
        state: Mutex::new((NodeState::Starting, crate::model::now_ms())),
        total_run: AtomicU64::new(0),
        total_succeeded: AtomicU64::new(0),
    });
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let work_dir = ctx.options.work_dir.to_string_lossy().into_owned();
    let join = NodeJoin {
        pool: &ctx.options.pool_id,
        node: &ctx.options.node_id,
        host: &host,
        slots,
        version: env!("CARGO_PKG_VERSION"),
        work_dir: &work_dir,
    };
    ctx.store.join_pool(&join).await?;
    tracing::info!(pool = %ctx.options.pool_id, node = %ctx.options.node_id, slots, "node joined the pool");
    let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
    job::restore(&ctx).await;
    let root = ctx.options.work_dir.join(&ctx.config.account);
    let usable = match tokio::fs::create_dir_all(&root).await {
        Err(e) => {
            tracing::error!(dir = %root.display(), error = %e, "the work directory is unusable: this node takes no task");
            ctx.set_state(NodeState::Unusable).await;
            false
        }
        Ok(()) => match &pool.spec.start_task {
            Some(task) => start::run(&ctx, task, &shutdown).await,
            None => true,
        },
    };
    if usable {
        ctx.set_state(NodeState::Idle).await;
    }
    systemd::ready();
    let watch = tokio::spawn(job::watch(ctx.clone()));
    let jobs_dir = ctx.options.work_dir.join(&ctx.config.account).join("jobs");
    let sweeper = tokio::spawn(async move {
        loop {
            let dir = jobs_dir.clone();
            if let Ok(n) = tokio::task::spawn_blocking(move || retention::sweep(&dir)).await {
                if n > 0 {
                    tracing::info!(removed = n, "removed task directories past their retention time");
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let tracker = TaskTracker::new();
    if usable {
        consume(&ctx, &tracker, &shutdown).await;
    } else {
        // A node whose start task failed (or that is unusable) takes no task; it stays, visible,
        // until stopped.
        shutdown.cancelled().await;
    }
    systemd::stopping();
    ctx.set_state(NodeState::LeavingPool).await;
    drain(&ctx, &tracker).await;
    watch.abort();
    heartbeat.abort();
    sweeper.abort();
    if let Err(e) = ctx.store.leave_pool(&ctx.options.pool_id, &ctx.options.node_id).await {
        tracing::warn!(error = %e, "could not record that the node left the pool");
    }
    tracing::info!("node left the pool");
    Ok(())
}

/// Lets running tasks finish within the drain timeout, then hands the rest back.
async fn drain(ctx: &NodeContext, tracker: &TaskTracker) {
    tracker.close();
    if tracker.is_empty() {
        return;
    }
    let active = ctx.running.lock().map(|r| r.len()).unwrap_or(0);
    tracing::info!(running = active, drain_timeout = ?ctx.options.drain_timeout, "draining");
    if tokio::time::timeout(ctx.options.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("drain timeout passed; handing running tasks back");
        ctx.hand_back.cancel();
        tracker.wait().await;
    }
}

/// Renews the node's lease every few seconds, with its state and running tasks, and pings the
/// systemd watchdog while Redis hears it.
async fn heartbeat(ctx: Arc<NodeContext>) {
    loop {
        if beat(&ctx).await {
            systemd::watchdog();
        }
        tokio::time::sleep(NODE_LEASE / 5).await;
    }
}

/// One heartbeat; false if it could not be written.
async fn beat(ctx: &NodeContext) -> bool {
    let tasks: Vec<(String, String)> = ctx.running.lock().map(|r| r.keys().cloned().collect()).unwrap_or_default();
    let (mut state, since) = ctx.state.lock().map(|s| *s).unwrap_or((NodeState::Idle, 0));
    if state == NodeState::Idle && !tasks.is_empty() {
        state = NodeState::Running;
    }
    let beat = NodeBeat {
        state,
        since,
        tasks,
        used_slots: ctx.slots.saturating_sub(ctx.free.available_permits() as u32),
        total_run: ctx.total_run.load(Ordering::Relaxed),
        total_succeeded: ctx.total_succeeded.load(Ordering::Relaxed),
    };
    match ctx.store.node_beat(&ctx.options.node_id, &beat).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat failed");
            false
        }
    }
}

/// Consumes until `shutdown`, reconnecting to the broker whenever the connection is lost.
async fn consume(ctx: &Arc<NodeContext>, tracker: &TaskTracker, shutdown: &CancellationToken) {
    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume_once(ctx, tracker, shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "lost the broker; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A delivery held until a slot is free; the highest job priority starts first, then the oldest.
struct Held {
    priority: i32,
    seq: std::cmp::Reverse<u64>,
    /// The slots it takes (its `requiredSlots`, at most the node's).
    slots: u32,
    delivery: lapin::message::Delivery,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(other.priority, other.seq))
    }
}

/// Consumes the pool's three band queues on one channel, each with a prefetch of twice `slots`,
/// and starts a held delivery whenever enough of the node's `slots` are free for it (its
/// `requiredSlots`), highest priority first.
/// The lookahead matters: with a prefetch of only `slots`, the next high-priority message would
/// still be on its way from the broker when a slot frees, and a held low-priority one would take
/// the slot. So with a backlog of low-priority tasks, a higher-priority job's tasks start next
/// on every node (at most `2 × slots` low-priority messages wait in each node's hand meanwhile),
/// and a node always has its next task at hand when a slot frees.
async fn consume_once(ctx: &Arc<NodeContext>, tracker: &TaskTracker, shutdown: &CancellationToken) -> Result<()> {
    let (slots, free) = (ctx.slots, &ctx.free);
    let connection = queue::connect(&ctx.config.amqp_url, &format!("drover-worker {}", ctx.options.node_id)).await?;
    let channel = connection.create_channel().await?;
    ctx.topology.declare_pool(&channel, &ctx.options.pool_id).await?;
    let publish = connection.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let prefetch = slots.saturating_mul(2).min(u16::MAX as u32) as u16;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumers = Vec::new();
    let mut tags = Vec::new();
    for band in Band::ALL {
        let tag = format!(
            "{}{}",
            ctx.options.node_id,
            match band {
                Band::High => ".high",
                Band::Normal => "",
                Band::Low => ".low",
            }
        );
        let queue = ctx.topology.band_queue(&ctx.options.pool_id, band);
        consumers.push(
            channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
        tags.push(tag);
    }
    let mut deliveries = futures_util::stream::select_all(consumers);
    tracing::info!(queue = %ctx.topology.pool_queue(&ctx.options.pool_id), "consuming");
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Stop taking work; deliveries not started go back to the queue with the channel.
                for tag in &tags {
                    let _ = channel.basic_cancel(tag.as_str().into(), Default::default()).await;
                }
                drain(ctx, tracker).await;
                let _ = connection.close(200, "node leaving".into()).await;
                return Ok(());
            }
            permit = free.clone().acquire_many_owned(held.peek().map_or(1, |h| h.slots)), if !held.is_empty() => {
                let (Ok(permit), Some(next)) = (permit, held.pop()) else { continue };
                let ctx = ctx.clone();
                let publish = publish.clone();
                tracker.spawn(async move {
                    attempt::handle(ctx, publish, next.delivery).await;
                    drop(permit);
                });
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    // A malformed message sorts first, to be dead-lettered at once. A task that needs
                    // more slots than the node has takes all of them (submission refuses more
                    // than the pool's taskSlotsPerNode; this node was started with fewer).
                    let (priority, need) =
                        TaskMessage::parse(&delivery.data).map_or((i32::MAX, 1), |m| (m.priority, m.slots.clamp(1, slots)));
                    seq += 1;
                    held.push(Held { priority, seq: std::cmp::Reverse(seq), slots: need, delivery });
                }
                Some(Err(e)) => return Err(Error::Amqp(e)),
                None => return Err(Error::State("the broker cancelled the consumer".into())),
            }
        }
    }
}

/// Publishes `messages` (retries, released dependents, parked tasks) with pipelined confirms and
/// waits until the broker has confirmed them all.
pub(crate) async fn publish_all(ctx: &NodeContext, channel: &Channel, messages: &[TaskMessage]) -> Result<()> {
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = channel
            .basic_publish(
                ctx.topology.tasks_exchange().into(),
                Topology::routing_key(&ctx.options.pool_id, message.priority).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &message.to_bytes(),
                queue::task_properties(&message.task_id),
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        if !confirm.await?.is_ack() {
            return Err(Error::State("the broker refused a task message".into()));
        }
    }
    Ok(())
}

/// Moves a message that is not a valid task to the dead-letter queue, saying why.
pub(crate) async fn dead_letter(ctx: &NodeContext, channel: &Channel, body: &[u8], reason: &str) -> Result<()> {
    let mut headers = FieldTable::default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert("x-drover-pool".into(), AMQPValue::LongString(ctx.options.pool_id.as_str().into()));
    let confirm = channel
        .basic_publish(
            ctx.topology.dead_letters().into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2).with_headers(headers),
        )
        .await?
        .await?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err(Error::State("the broker refused the dead letter".into()))
    }
}

pub(crate) async fn ack(delivery: &lapin::message::Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::debug!(error = %e, "ack failed (the message will come back and be recognised)");
    }
}

pub(crate) async fn requeue(delivery: &lapin::message::Delivery) {
    if let Err(e) = delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
        tracing::debug!(error = %e, "nack failed (the message comes back with the channel)");
    }
}
