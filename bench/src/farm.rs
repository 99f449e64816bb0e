//! The bench's own account on the local services: its configuration, the processes it starts
//! (workers, monitor), running the `drover` CLI, Redis and /proc readings, and the cleanup that
//! removes everything it made.

use anyhow::{bail, Context, Result};
use drover_core::queue::{Band, Topology};
use drover_core::status::StatusStore;
use drover_core::Config;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The pool whose workers run the end-to-end and dispatch tasks.
pub(crate) const FARM_POOL: &str = "farm";
/// A pool with no worker: what is submitted to it stays queued.
pub(crate) const QUEUE_POOL: &str = "queue";
/// Pools whose queues the cleanup deletes.
const POOLS: [&str; 2] = [FARM_POOL, QUEUE_POOL];

/// A long-running child (a worker or the monitor), stopped by the cleanup.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) log: PathBuf,
}

/// Everything the phases share.
pub(crate) struct Farm {
    pub(crate) account: String,
    pub(crate) config: Config,
    /// target/bench/<account>: task files, worker directories, logs.
    pub(crate) work: PathBuf,
    bin_dir: PathBuf,
    /// A plain connection for what drover's store does not offer (INFO, MEMORY USAGE, SCAN).
    pub(crate) redis: redis::aio::MultiplexedConnection,
    pub(crate) store: StatusStore,
    pub(crate) workers: Vec<Proc>,
    pub(crate) monitor: Option<Proc>,
    /// The bare pipeline's queue, deleted by the cleanup if the phase did not finish.
    pub(crate) bare_queue: Option<String>,
}

/// A variable of the environment, unset when empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Farm {
    /// A fresh account `bench-<pid>` with the connection settings of the environment (as
    /// `drover` reads them), and its work directory.
    pub(crate) async fn new(args: &crate::Args) -> Result<Farm> {
        let account = format!("bench-{}", std::process::id());
        let config = Config {
            amqp_url: env("DROVER_AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
                .split(',')
                .map(String::from)
                .collect(),
            redis_url: env("DROVER_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
            redis_wait_replicas: env("DROVER_REDIS_WAIT_REPLICAS")
                .map(|n| n.parse().context("DROVER_REDIS_WAIT_REPLICAS is not a number"))
                .transpose()?,
            s3_endpoint: env("DROVER_S3_ENDPOINT"),
            bucket: env("DROVER_BUCKET").unwrap_or_else(|| "drover".into()),
            account: account.clone(),
            ca_file: env("DROVER_CA_FILE").map(PathBuf::from),
            signing_key_file: env("DROVER_SIGNING_KEY_FILE").map(PathBuf::from),
        };
        config.validate().context("the connection settings")?;
        let bin_dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .context("find this program's path")?
                .parent()
                .context("this program's directory")?
                .to_path_buf(),
        };
        for bin in ["drover", "drover-worker", "drover-monitor"] {
            if !bin_dir.join(bin).is_file() {
                bail!("{} is missing: build with `cargo build --release --bins`", bin_dir.join(bin).display());
            }
        }
        let client = redis::Client::open(config.redis_url.as_str())
            .context("open the Redis URL (drover-bench needs a plain redis:// URL)")?;
        let redis = client.get_multiplexed_async_connection().await.context("connect to Redis")?;
        let store = StatusStore::connect(&config).await.context("connect drover's status store")?;
        // target/release -> target/bench/<account>
        let target = bin_dir.parent().context("the binaries' directory has no parent")?;
        let work = target.join("bench").join(&account);
        if let Some(ago) = since_cleanup(&work) {
            eprintln!(
                "drover-bench: an earlier run removed its task directories {}s ago; if {} is on an ext4 without a journal, \
                 its new inodes step over those freed in the last {}s, and the workers' CPU per task reads high",
                ago.as_secs(),
                target.display(),
                INODE_RECENCY.as_secs()
            );
        }
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        Ok(Farm { account, config, work, bin_dir, redis, store, workers: vec![], monitor: None, bare_queue: None })
    }

    /// A command for one of drover's programs, for the bench account.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.env("DROVER_ACCOUNT", &self.account).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `drover <args>` to its end; its stdout, or an error with its stderr.
    pub(crate) async fn drover(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command("drover")
            .args(["-o", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("run drover {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("drover {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `n` tasks of /bin/true as JSON Lines (`t0000001`, ...) and returns the file.
    pub(crate) fn task_file(&self, name: &str, n: u64) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.work.join(name);
        let file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for i in 1..=n {
            writeln!(out, r#"{{"id":"{}","commandLine":"/bin/true"}}"#, task_id(i))
                .with_context(|| format!("write {}", path.display()))?;
        }
        out.flush().with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Creates the pool (if need be) and a job on it.
    pub(crate) async fn pool_and_job(&self, pool: &str, slots: u32, job: &str) -> Result<()> {
        self.drover(&["pool", "create", "--pool-id", pool, "--task-slots-per-node", &slots.to_string()]).await?;
        self.drover(&["job", "create", "--job-id", job, "--pool-id", pool]).await?;
        Ok(())
    }

    /// Starts `workers` drover-worker processes on the farm pool (running every task as the
    /// worker's own user when `as_worker_user`) and waits until every one shows `idle`.
    pub(crate) async fn start_workers(&mut self, workers: u32, as_worker_user: bool) -> Result<()> {
        for n in 1..=workers {
            let dir = self.work.join(format!("node-{n}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let mut cmd = self.command("drover-worker");
            cmd.arg("--pool-id").arg(FARM_POOL).arg("--work-dir").arg(&dir);
            // The flag alone says how tasks run, as this program's own flag or variable decided.
            cmd.env_remove("DROVER_TASKS_AS_WORKER_USER");
            if as_worker_user {
                cmd.arg("--tasks-as-worker-user");
            }
            let proc = self.spawn_logged(cmd, &format!("worker-{n}"))?;
            self.workers.push(proc);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = self.store.list_nodes(FARM_POOL).await.context("list the pool's nodes")?;
            let idle = nodes.iter().filter(|n| matches!(n.state, drover_core::model::node::NodeState::Idle)).count();
            if idle >= self.workers.len() {
                return Ok(());
            }
            for w in &mut self.workers {
                if let Some(status) = w.child.try_wait().with_context(|| format!("check {}", w.name))? {
                    bail!("{} exited ({status}) before it was idle:\n{}", w.name, tail(&w.log, 20));
                }
            }
            if Instant::now() > deadline {
                bail!("the workers were not idle within 60 s ({idle} of {} idle)", self.workers.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a long-running child with its stdout and stderr in `<work>/<name>.log`.
    pub(crate) fn spawn_logged(&self, mut cmd: Command, name: &str) -> Result<Proc> {
        let log = self.work.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = file.try_clone().with_context(|| format!("open {}", log.display()))?;
        let child = cmd.stdout(file).stderr(err).spawn().with_context(|| format!("start {name}"))?;
        let pid = child.id().with_context(|| format!("{name} has no pid"))?;
        Ok(Proc { name: name.into(), child, pid, log })
    }

    /// `used_memory` of Redis's `INFO memory`, in bytes.
    pub(crate) async fn used_memory(&mut self) -> Result<i64> {
        let info: String =
            redis::cmd("INFO").arg("memory").query_async(&mut self.redis).await.context("Redis INFO memory")?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no used_memory in INFO memory")
    }

    /// The CPU Redis has used since it started (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`),
    /// in seconds.
    pub(crate) async fn redis_cpu_seconds(&mut self) -> Result<f64> {
        let info: String =
            redis::cmd("INFO").arg("cpu").query_async(&mut self.redis).await.context("Redis INFO cpu")?;
        let field = |name: &str| -> Result<f64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("no {name} in INFO cpu"))
        };
        Ok(field("used_cpu_sys:")? + field("used_cpu_user:")?)
    }

    /// Stops the workers and the monitor: SIGTERM, then waits (SIGKILL after 60 s).
    pub(crate) async fn stop_processes(&mut self) {
        let mut procs: Vec<Proc> = self.workers.drain(..).collect();
        procs.extend(self.monitor.take());
        for p in &procs {
            if let Ok(pid) = i32::try_from(p.pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for p in &mut procs {
            match tokio::time::timeout(Duration::from_secs(60), p.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("cleanup: wait for {}: {e}", p.name),
                Err(_) => {
                    eprintln!("cleanup: {} did not stop within 60 s of SIGTERM: killed", p.name);
                    let _ = p.child.kill().await;
                }
            }
        }
    }

    /// Removes everything the bench made; each step reports its own failure and the others go on.
    pub(crate) async fn cleanup(&mut self, failed: bool) {
        eprintln!("[cleanup] account {}", self.account);
        if failed {
            for p in self.workers.iter().chain(self.monitor.as_ref()) {
                eprintln!("--- last lines of {} ---\n{}", p.name, tail(&p.log, 20));
            }
        }
        self.stop_processes().await;
        if let Err(e) = self.delete_queues().await {
            eprintln!("cleanup: RabbitMQ: {e:#}");
        }
        for pattern in [format!("drover:{}:*", self.account), format!("drover:{{{}:*", self.account)] {
            if let Err(e) = unlink_matching(&mut self.redis, &pattern).await {
                eprintln!("cleanup: Redis {pattern}: {e:#}");
            }
        }
        if let Err(e) = crate::staging::delete_prefix(&self.config, &format!("{}/", self.account)).await {
            eprintln!("cleanup: S3: {e:#}");
        }
        // A run whose workers made task directories leaves the time they went (since_cleanup).
        let tasks_ran = self.work.join("node-1").exists();
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            eprintln!("cleanup: remove {}: {e}", self.work.display());
        }
        if tasks_ran {
            if let Some(dir) = self.work.parent() {
                let _ = std::fs::write(dir.join(CLEANED), b"");
            }
        }
    }

    /// Deletes the account's queues and exchanges, and the bare pipeline's queue.
    async fn delete_queues(&mut self) -> Result<()> {
        let url = self.config.amqp_url.first().context("no broker URL")?;
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .context("connect to RabbitMQ")?;
        let topology = Topology::new(&self.account);
        let mut queues: Vec<String> = POOLS.iter().flat_map(|p| Band::ALL.map(|b| topology.band_queue(p, b))).collect();
        queues.push(topology.dead_letters());
        queues.extend(self.bare_queue.take());
        for queue in &queues {
            // A channel each: an error closes the channel it happened on.
            let ch = connection.create_channel().await.context("open a channel")?;
            if let Err(e) = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await {
                eprintln!("cleanup: delete queue {queue}: {e}");
            }
        }
        for exchange in [topology.tasks_exchange(), topology.dead_letters()] {
            let ch = connection.create_channel().await.context("open a channel")?;
            if let Err(e) = ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await {
                eprintln!("cleanup: delete exchange {exchange}: {e}");
            }
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}

/// A task id of the task files: `t0000001` for 1.
pub(crate) fn task_id(i: u64) -> String {
    format!("t{i:07}")
}

/// Deletes (UNLINK, in batches) every key matching `pattern`; returns how many went.
pub(crate) async fn unlink_matching(redis: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Result<u64> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .context("SCAN")?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut gone = 0;
    for batch in keys.chunks(1000) {
        let n: u64 = redis::cmd("UNLINK").arg(batch).query_async(redis).await.context("UNLINK")?;
        gone += n;
    }
    Ok(gone)
}

/// The last `n` lines of a log file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A process's CPU so far: fields 14 to 17 of /proc/<pid>/stat, counted after the command name
/// (which may hold spaces).
pub(crate) fn cpu_ticks(pid: u32) -> Result<ProcCpu> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let (_, rest) = stat.rsplit_once(')').with_context(|| format!("{path}: no command name"))?;
    // `rest` starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields.get(n - 3).and_then(|f| f.parse().ok()).with_context(|| format!("{path}: field {n}"))
    };
    Ok(ProcCpu { own: field(14)? + field(15)?, reaped: field(16)? + field(17)? })
}

/// A process's CPU so far, in clock ticks: its own (utime + stime) and that of the children it
/// has reaped (cutime + cstime).
#[derive(Clone, Copy)]
pub(crate) struct ProcCpu {
    pub(crate) own: u64,
    pub(crate) reaped: u64,
}

/// The task spawners (`drover-worker --task-spawner`) among the children of process `pid`.
pub(crate) fn task_spawners(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    let children = threads.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok());
    let pids: Vec<u32> =
        children.flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>()).collect();
    pids.into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"--task-spawner"))
        })
        .collect()
}

/// Clock ticks per second (sysconf CLK_TCK).
pub(crate) fn ticks_per_second() -> Result<u64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).context("sysconf(CLK_TCK)")?;
    ticks.and_then(|t| u64::try_from(t).ok()).filter(|&t| t > 0).context("sysconf(CLK_TCK) gave no value")
}

/// VmHWM (peak RSS so far) of a live process, in KiB; `None` once it has gone.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The file whose time is the last cleanup's, beside the runs' work directories.
const CLEANED: &str = ".cleaned";

/// How long ext4 without a journal keeps a freed inode from reuse while its inode table block is
/// dirty (`recently_deleted`: 5 s, plus 300 s when dirty); each new inode's search steps over
/// every one of them, so a run right after another's cleanup (80,000 inodes for 20,000 tasks)
/// spends CPU there.
const INODE_RECENCY: Duration = Duration::from_secs(305);

/// How long ago an earlier run's cleanup removed its workers' task directories beside `work`,
/// if within [`INODE_RECENCY`].
fn since_cleanup(work: &Path) -> Option<Duration> {
    let mark = work.parent()?.join(CLEANED);
    let ago = std::fs::metadata(mark).ok()?.modified().ok()?.elapsed().ok()?;
    (ago < INODE_RECENCY).then_some(ago)
}
