//! The node agent: joins a pool, consumes its queue with one prefetch per free slot, and runs
//! each task through its attempt (see [`attempt`]). It reconnects to the broker by itself, keeps a
//! heartbeat in Redis so others can tell it is alive, and drains on shutdown.

mod acks;
mod attempt;
mod cgroups;
mod command;
mod dispatch;
mod files;
mod job;
mod packages;
mod process;
mod retention;
mod spawner;
mod start;
mod systemd;
pub mod users;

pub use process::Exit;
pub use spawner::{serve as serve_spawner, SPAWNER_FLAG};

use crate::model::node::{NodeOrder, NodeState, TasksOption};
use crate::model::TaskMessage;
use crate::queue::{Publisher, Topology};
use crate::retry::Patience;
use crate::staging::Staging;
use crate::status::{BeatReply, NodeBeat, NodeJoin, StatusStore, NODE_LEASE};
use crate::{Config, Result};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
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
    /// The most bytes of resource files one task may download (None: no limit).
    pub max_task_download_bytes: Option<u64>,
    /// Run every command as the worker's user, non-admin ones included.
    pub tasks_as_worker_user: bool,
    /// The only S3 places (`s3://bucket[/prefix]`) tasks may read from or write to, besides the
    /// account's own part of its bucket; empty: anywhere the worker's credentials reach.
    pub storage_allow: Vec<String>,
    /// The Batch API's address given to tasks (`AZ_BATCH_ACCOUNT_URL`), if one serves the account.
    pub api_url: Option<String>,
    /// Whether something starts the worker again when it exits to restart (systemd, or the
    /// monitor's process actuator): only then can a reboot be ordered.
    pub restartable: bool,
    /// Where the node serves its files to the API and the CLI (None: it serves none).
    pub files_listen: Option<std::net::SocketAddr>,
    /// The URL others reach that service at (None: derived, see `files::bind`).
    pub files_url: Option<String>,
    /// This worker's executable, which started with [`SPAWNER_FLAG`] is the task spawner (see
    /// [`serve_spawner`]); None: the worker forks itself to start commands as other users.
    pub task_spawner: Option<PathBuf>,
    /// The runtime that moves tasks' files (downloads, uploads, packages): drover-worker's has
    /// threads of its own, so that their bytes (TLS, checksums) do not hold up the node's agent,
    /// which runs on one thread (`Handle::current()`: the agent's runtime moves them too).
    pub transfers: tokio::runtime::Handle,
}

/// Why a node left its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// It was stopped (a signal, its parent's exit, an error).
    Stopped,
    /// It was removed from the pool (Azure's remove nodes).
    Removed,
    /// It was told to restart (Azure's reboot): exit so that its actuator starts it again.
    Rebooting,
}

/// This host's name as a node id may hold it: letters, digits and '-', at most 40 of them.
pub fn host_name() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect()
}

/// A node id names the node's directories: letters, digits, '-', '_' and '.', not first.
fn check_node_id(id: &str) -> Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 128 || id.starts_with('.') || !id.chars().all(fine) {
        let shown: String = id.chars().take(80).collect();
        return Err(crate::Error::invalid(format!(
            "node id {shown:?}: must be 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"
        )));
    }
    Ok(())
}

/// A task's directory, relative to its node's directory (`<work-dir>/<account>`).
pub fn task_path(job: &str, task: &str) -> String {
    format!("jobs/{job}/{task}")
}

/// The host name plus a suffix unique on the host.
pub fn default_node_id() -> String {
    let host = host_name();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// What every attempt on this node shares.
pub(crate) struct NodeContext {
    pub(crate) config: Config,
    pub(crate) options: NodeOptions,
    pub(crate) store: StatusStore,
    pub(crate) staging: Arc<Staging>,
    pub(crate) topology: Topology,
    /// Publishes outboxes and dead letters, on its own connection.
    pub(crate) publisher: Publisher,
    /// Tasks this node runs now, as (job, task), each with the token that kills it.
    pub(crate) running: Mutex<HashMap<(String, String), CancellationToken>>,
    /// Running tasks killed to be handed back (their job was disabled with `requeue`).
    pub(crate) requeued: Mutex<std::collections::HashSet<(String, String)>>,
    /// Whether the node's scheduling is disabled, and how (Azure's disable scheduling), as its
    /// last heartbeat read it: the dispatch loop stops or resumes consuming on a change.
    pub(crate) scheduling: tokio::sync::watch::Sender<Option<crate::model::node::TasksOption>>,
    /// An order to leave or restart, as the last heartbeat read it.
    pub(crate) order: tokio::sync::watch::Sender<Option<NodeOrder>>,
    /// Set when the node leaves by an order to let its tasks finish: no drain timeout then.
    pub(crate) drain_all: std::sync::atomic::AtomicBool,
    /// The tasks whose attempts ended here last, newest last (Azure's recentTasks).
    pub(crate) recent: Mutex<VecDeque<(String, String)>>,
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
    /// With `nodeFillType: pack`, the node's consumer priority: a node that joined the pool earlier
    /// ranks higher, and the broker gives a lower one a task only while every higher one is full.
    pub(crate) fill_rank: Option<i32>,
    /// The node's own state (`idle` stands for idle or running: the heartbeat tells them apart) and
    /// since when (ms).
    pub(crate) state: Mutex<(NodeState, i64)>,
    pub(crate) total_run: AtomicU64,
    pub(crate) total_succeeded: AtomicU64,
    /// Who non-admin commands run as, and the pool's userAccounts they may name.
    pub(crate) users: users::Users,
    pub(crate) user_accounts: Vec<crate::model::UserAccount>,
    /// The cgroups commands run in.
    pub(crate) cgroups: cgroups::Cgroups,
    /// Starts commands as other users, when tasks get users of their own.
    pub(crate) spawner: Option<spawner::Spawner>,
}

/// Makes the account's directory and its `jobs`. With task users, both are 0711: a task reaches
/// its own directory (0700) and the job's preparation, but lists no other job or account.
async fn create_account_dir(root: &Path, users: &users::Users) -> std::io::Result<()> {
    let jobs = root.join("jobs");
    tokio::fs::create_dir_all(&jobs).await?;
    if matches!(users, users::Users::Switch(_)) {
        use std::os::unix::fs::PermissionsExt;
        for dir in [root, jobs.as_path()] {
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).await?;
        }
    }
    Ok(())
}

/// How many ended tasks a node lists in its recentTasks.
const RECENT_TASKS: usize = 20;

impl NodeContext {
    /// Moves the node to `state` and reports it at once (a heartbeat).
    pub(crate) async fn set_state(&self, state: NodeState) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state, crate::model::now_ms());
        }
        beat(self).await;
    }

    /// Whether the node's own state is `state`.
    pub(crate) fn state_is(&self, state: NodeState) -> bool {
        self.state.lock().map(|s| s.0 == state).unwrap_or(false)
    }

    /// Runs a transfer of a task's files on the node's transfer runtime (`NodeOptions::
    /// transfers`); dropped (the task killed, the node leaving), it is aborted there.
    pub(crate) async fn transfer<T, F>(&self, transfer: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let transfer = tokio_util::task::AbortOnDropHandle::new(self.options.transfers.spawn(transfer));
        transfer.await.map_err(|e| crate::Error::Internal(format!("a file transfer: {e}")))?
    }

    /// Runs a status write until it succeeds or fails for good; Redis outages are waited out
    /// (the message stays unacked meanwhile) unless the node is handing its work back.
    pub(crate) async fn persist<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        crate::retry::transient(what, Patience::Forever, || self.hand_back.is_cancelled(), op).await
    }

    /// Whether this node runs the task `msg` names now.
    pub(crate) fn runs(&self, msg: &TaskMessage) -> bool {
        let key = (msg.job_id.clone(), msg.task_id.clone());
        self.running.lock().map(|r| r.contains_key(&key)).unwrap_or(false)
    }

    pub(crate) fn running_insert(&self, msg: &TaskMessage, kill: CancellationToken) {
        if let Ok(mut r) = self.running.lock() {
            r.insert((msg.job_id.clone(), msg.task_id.clone()), kill);
        }
    }

    pub(crate) fn running_remove(&self, msg: &TaskMessage) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&(msg.job_id.clone(), msg.task_id.clone()));
        }
    }

    /// Counts an attempt whose outcome was recorded (totalTasksRun, totalTasksSucceeded,
    /// recentTasks).
    pub(crate) fn count_run(&self, msg: &TaskMessage, succeeded: bool) {
        self.total_run.fetch_add(1, Ordering::Relaxed);
        if succeeded {
            self.total_succeeded.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_TASKS {
                recent.pop_front();
            }
            recent.push_back((msg.job_id.clone(), msg.task_id.clone()));
        }
    }

    /// `<work-dir>/<account>`: everything this node keeps for the account.
    pub(crate) fn account_dir(&self) -> PathBuf {
        self.options.work_dir.join(&self.config.account)
    }

    /// A job's directory: its tasks' directories, and `.jobpreparation` / `.jobrelease` (a dot
    /// cannot start a task id, so no task shares them) holding one directory per node: the
    /// workers of a host share the work directory.
    pub(crate) fn job_dir(&self, job: &str) -> PathBuf {
        self.account_dir().join("jobs").join(job)
    }

    pub(crate) fn prep_dir(&self, job: &str) -> PathBuf {
        self.job_dir(job).join(".jobpreparation").join(&self.options.node_id)
    }

    pub(crate) fn release_dir(&self, job: &str) -> PathBuf {
        self.job_dir(job).join(".jobrelease").join(&self.options.node_id)
    }

    /// `<work-dir>/<account>/startup/<node>`: where this node's start task runs.
    pub(crate) fn startup_dir(&self) -> PathBuf {
        self.account_dir().join("startup").join(&self.options.node_id)
    }

    pub(crate) fn task_dir(&self, job: &str, task: &str) -> PathBuf {
        self.account_dir().join(task_path(job, task))
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
) -> Result<Left> {
    config.validate()?;
    crate::model::validate_id("pool id", &options.pool_id)?;
    check_node_id(&options.node_id)?;
    let users = users::Users::new(options.tasks_as_worker_user)?;
    let store = StatusStore::connect(&config).await?;
    if store.signer().is_none() {
        tracing::info!("no signing keys (--signing-key-file): this node runs tasks nobody signed");
    }
    let pool = store.get_pool_checked(&options.pool_id).await?;
    let slots = options.task_slots.unwrap_or(pool.spec.task_slots_per_node).max(1);
    let staging =
        Staging::new(&config).await?.with_retry_budget(options.storage_retry).with_allowed(&options.storage_allow)?;
    let publisher =
        Publisher::new(&config.broker(), &format!("drover-worker {}", options.node_id), Topology::new(&config.account));
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let work_dir = options.work_dir.to_string_lossy().into_owned();
    let files = match options.files_listen {
        Some(listen) => {
            let (listener, url) = files::bind(listen, options.files_url.as_deref(), &config.redis_url).await?;
            let mut key = vec![0u8; 32];
            chacha20poly1305::aead::rand_core::RngCore::fill_bytes(&mut chacha20poly1305::aead::OsRng, &mut key);
            Some((listener, crate::status::FileService { url, key }))
        }
        None => None,
    };
    let join = NodeJoin {
        pool: &options.pool_id,
        node: &options.node_id,
        host: &host,
        slots,
        version: env!("CARGO_PKG_VERSION"),
        work_dir: &work_dir,
        restartable: options.restartable,
        files: files.as_ref().map(|(_, service)| service),
    };
    let joins = store.join_pool(&join).await?;
    tracing::info!(pool = %options.pool_id, node = %options.node_id, slots, "node joined the pool");
    let cgroups = cgroups::Cgroups::new();
    let spawner = match (&options.task_spawner, &users) {
        (Some(program), users::Users::Switch(_)) => match spawner::Spawner::start(program, cgroups.own()) {
            Ok(spawner) => Some(spawner),
            Err(e) => {
                tracing::warn!(error = %e, "no task spawner: the worker forks itself to start each command as its user");
                None
            }
        },
        _ => None,
    };
    let ctx = Arc::new(NodeContext {
        topology: Topology::new(&config.account),
        publisher,
        recent: Mutex::new(VecDeque::new()),
        config,
        options,
        store,
        staging: Arc::new(staging),
        running: Mutex::new(HashMap::new()),
        requeued: Mutex::new(Default::default()),
        scheduling: tokio::sync::watch::Sender::new(None),
        order: tokio::sync::watch::Sender::new(None),
        drain_all: std::sync::atomic::AtomicBool::new(false),
        jobs: job::NodeJobs::default(),
        packages: packages::NodePackages::default(),
        hand_back,
        slots,
        free: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
        fill_rank: pool.spec.packs().then(|| i32::try_from(joins).map_or(i32::MIN, |n| -n)),
        state: Mutex::new((NodeState::Starting, crate::model::now_ms())),
        total_run: AtomicU64::new(0),
        total_succeeded: AtomicU64::new(0),
        users,
        user_accounts: pool.spec.user_accounts.clone(),
        cgroups,
        spawner,
    });
    let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
    let file_service = files.map(|(listener, service)| {
        tracing::info!(url = %service.url, "serving the node's files");
        tokio::spawn(files::serve(listener, ctx.account_dir(), service.key))
    });
    job::restore(&ctx).await;
    let root = ctx.account_dir();
    let usable = match create_account_dir(&root, &ctx.users).await {
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
    // A usable node turns idle once it consumes (dispatch), not before: a task added after the
    // node shows idle reaches it.
    systemd::ready();
    let watch = tokio::spawn(job::watch(ctx.clone()));
    let jobs_dir = ctx.account_dir().join("jobs");
    let outboxes = tokio::spawn(sweep_outboxes(ctx.clone()));
    let sweeping = ctx.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            let dir = jobs_dir.clone();
            let running = sweeping.running.lock().map(|r| r.keys().cloned().collect()).unwrap_or_default();
            if let Ok(n) = tokio::task::spawn_blocking(move || retention::sweep(&dir, &running)).await {
                if n > 0 {
                    tracing::info!(removed = n, "removed task directories past their retention time");
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let ordered = tokio::spawn(carry_out_order(ctx.clone(), shutdown.clone()));
    let tracker = TaskTracker::new();
    let mut consumed = Ok(());
    if usable {
        consumed = dispatch::consume(&ctx, &tracker, &shutdown).await;
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
    if let Some(service) = file_service {
        service.abort();
    }
    sweeper.abort();
    outboxes.abort();
    // Nothing a command of this node started outlives it (a start task's background services).
    if let Some(spawner) = &ctx.spawner {
        spawner.close();
    }
    ctx.cgroups.close();
    ctx.users.close();
    if let Err(e) = ctx.store.leave_pool(&ctx.options.pool_id, &ctx.options.node_id).await {
        tracing::warn!(error = %e, "could not record that the node left the pool");
    }
    tracing::info!("node left the pool");
    let left = match ordered.is_finished() {
        true => ordered.await.ok().flatten(),
        false => {
            ordered.abort();
            None
        }
    };
    consumed.map(|()| match left {
        Some(NodeOrder::Remove(_)) => Left::Removed,
        Some(NodeOrder::Reboot(_)) => Left::Rebooting,
        None => Left::Stopped,
    })
}

/// Waits for an order to leave or restart and starts carrying it out: the running tasks are
/// handed back, killed or left to finish as it says, and the node leaves.
async fn carry_out_order(ctx: Arc<NodeContext>, shutdown: CancellationToken) -> Option<NodeOrder> {
    let mut told = ctx.order.subscribe();
    let order = loop {
        if let Some(order) = *told.borrow_and_update() {
            break order;
        }
        told.changed().await.ok()?;
    };
    tracing::info!(order = %order.to_text(), "the node was told to leave; leaving");
    match order.option() {
        TasksOption::Requeue => ctx.hand_back.cancel(),
        TasksOption::TaskCompletion => ctx.drain_all.store(true, Ordering::Relaxed),
        TasksOption::Terminate => {}
    }
    shutdown.cancel();
    if order.option() == TasksOption::Terminate {
        dispatch::stop_running(&ctx, TasksOption::Terminate);
    }
    Some(order)
}

/// Lets running tasks finish within the drain timeout, then hands the rest back.
pub(super) async fn drain(ctx: &NodeContext, tracker: &TaskTracker) {
    tracker.close();
    if tracker.is_empty() {
        return;
    }
    let active = ctx.running.lock().map(|r| r.len()).unwrap_or(0);
    if ctx.drain_all.load(Ordering::Relaxed) {
        tracing::info!(running = active, "draining until every running task has ended");
        tracker.wait().await;
        return;
    }
    tracing::info!(running = active, drain_timeout = ?ctx.options.drain_timeout, "draining");
    if tokio::time::timeout(ctx.options.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("drain timeout passed; handing running tasks back");
        ctx.hand_back.cancel();
        tracker.wait().await;
    }
}

/// How long an outbox may stay unpublished before the nodes publish it themselves: its writer
/// (a submitter, a node) died between recording the tasks and publishing their messages.
const OUTBOX_STALE_AFTER: Duration = Duration::from_secs(60);

/// How long a runnable task may stay queued, while a node of its pool idles and the pool's queues
/// hold nothing ready, before that node publishes its message again: the message was taken by
/// something that is not a node of the pool (consumed and acked), or lost.
const STRANDED_AFTER: Duration = Duration::from_secs(20);

/// Every 10 s: publishes the stale outboxes of the pool's active jobs, so nothing a dead writer
/// recorded is stranded (a task it did publish is then published twice: harmless), and, while
/// the node is idle, the messages of tasks stranded without one.
async fn sweep_outboxes(ctx: Arc<NodeContext>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let jobs = match ctx.store.pool_jobs(&ctx.options.pool_id).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::debug!(error = %e, "outbox sweep: cannot read the pool's jobs");
                continue;
            }
        };
        if let Err(e) = requeue_stranded(&ctx, &jobs).await {
            tracing::debug!(error = %e, "stranded task sweep failed");
        }
        for job in jobs {
            let stale = match ctx.store.stale_outboxes(&job, OUTBOX_STALE_AFTER).await {
                Ok(stale) => stale,
                Err(e) => {
                    tracing::debug!(%job, error = %e, "outbox sweep failed");
                    continue;
                }
            };
            for outbox in stale {
                let published = if outbox.is_empty() {
                    ctx.store.clear_outbox(&outbox).await
                } else {
                    ctx.publisher.publish_outbox(&ctx.store, &ctx.options.pool_id, &outbox).await
                };
                match published {
                    Ok(()) => {
                        tracing::info!(%job, tasks = outbox.messages().len(), "published an outbox its writer left")
                    }
                    Err(e) => tracing::warn!(%job, error = %e, "could not publish a stale outbox"),
                }
            }
        }
    }
}

/// Publishes again the messages of `jobs`' tasks queued longer than [`STRANDED_AFTER`] when
/// this node runs nothing and the pool's queues hold nothing ready: a message for them would have
/// reached it. A task whose message is only held elsewhere gets a second one (it runs once).
async fn requeue_stranded(ctx: &NodeContext, jobs: &[String]) -> crate::Result<()> {
    let idle = || ctx.free.available_permits() as u32 == ctx.slots && ctx.state_is(NodeState::Idle);
    if !idle() || ctx.publisher.ready_messages(&ctx.options.pool_id).await? > 0 {
        return Ok(());
    }
    for job in jobs {
        let ids = ctx.store.queued_since(job, STRANDED_AFTER, 1000).await?;
        if ids.is_empty() || !idle() {
            continue;
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let tag = format!("stranded-{}-{}", ctx.options.node_id, crate::model::now_ms());
        let outbox = ctx.store.requeue_tasks(job, &ids, &tag).await?;
        if !outbox.messages().is_empty() {
            tracing::warn!(%job, tasks = outbox.messages().len(), "tasks queued without a message (taken by something else, or lost): publishing them again");
        }
        ctx.publisher.publish_outbox(&ctx.store, &ctx.options.pool_id, &outbox).await?;
    }
    Ok(())
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
    let recent: Vec<(String, String)> = ctx.recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
    let (mut state, since) = ctx.state.lock().map(|s| *s).unwrap_or((NodeState::Idle, 0));
    if state == NodeState::Idle && !tasks.is_empty() {
        state = NodeState::Running;
    }
    let beat = NodeBeat {
        state,
        since,
        tasks,
        recent,
        used_slots: ctx.slots.saturating_sub(ctx.free.available_permits() as u32),
        total_run: ctx.total_run.load(Ordering::Relaxed),
        total_succeeded: ctx.total_succeeded.load(Ordering::Relaxed),
    };
    match ctx.store.node_beat(&ctx.options.node_id, &beat).await {
        Ok(told) => {
            let BeatReply { disabled, order } = told;
            ctx.scheduling.send_if_modified(|now| std::mem::replace(now, disabled) != disabled);
            ctx.order.send_if_modified(|now| std::mem::replace(now, order) != order);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat failed");
            false
        }
    }
}
