//! Test fixtures: a [`TestAccount`] gives each test its own namespace on the real RabbitMQ, Redis
//! and S3 services, runs the real `drover` and `drover-worker` binaries against it, and removes
//! everything it created when dropped (or explicitly with [`TestAccount::cleanup`]).

#![allow(clippy::unwrap_used, unreachable_pub)]

mod netns;
mod private_s3;
mod rabbit_cluster;
mod relay;
mod replicated_redis;
pub use netns::Host;
pub use private_s3::PrivateS3;
pub use rabbit_cluster::RabbitCluster;
pub use relay::Relay;
pub use replicated_redis::ReplicatedRedis;

use drover_core::queue::Topology;
use drover_core::Config;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The S3 server the test scripts start (scripts/services.sh), unless the environment names another.
pub const DEFAULT_S3: &str = "http://127.0.0.1:9014";
/// The bucket tests use; every test writes only under its own account's prefix.
pub const BUCKET: &str = "drover-test";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The workspace's target directory, where the binaries are.
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
            // Make sure the binaries match the sources. The same package selection as
            // scripts/test.sh, so features unify the same way and this is a no-op there.
            // The variables cargo sets for a test would change build-script fingerprints and
            // rebuild everything, so the nested build runs without them.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
                    || ["OUT_DIR", "RUST_TEST_THREADS", "CARGO"].contains(&name.as_ref())
                {
                    build.env_remove(name.as_ref());
                }
            }
            let status = build
                .args(["build", "--quiet", "--workspace", "--bins"])
                .current_dir(&root)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the binaries failed");
            let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
            target.join("debug")
        })
        .clone()
}

/// One test's own account on the shared services.
pub struct TestAccount {
    pub config: Config,
    pub work_dir: PathBuf,
    workers: Vec<Child>,
    /// The pids of monitors among `workers`: stopped gently, so their workers leave first.
    monitors: Vec<u32>,
    pools: Vec<String>,
    /// `RUST_LOG` of the workers it starts (`DROVER_TEST_WORKER_LOG`, default `info`).
    pub worker_log: String,
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl TestAccount {
    /// A fresh account named after the test.
    pub async fn new(test: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag: String = test.chars().filter(char::is_ascii_alphanumeric).take(20).collect();
        let name = format!("t-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let config = Config {
            amqp_url: env_or("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
                .split(',')
                .map(String::from)
                .collect(),
            redis_url: env_or("DROVER_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_wait_replicas: None,
            s3_endpoint: Some(env_or("DROVER_S3_ENDPOINT", DEFAULT_S3)),
            bucket: BUCKET.into(),
            account: name.clone(),
            signing_key_file: None,
            ca_file: None,
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let work_dir = root.join("target/test-work").join(&name);
        std::fs::create_dir_all(&work_dir).unwrap();
        // Tasks run as their own users (the tests run as root): they may write here, as to /tmp.
        std::fs::set_permissions(&work_dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let worker_log = env_or("DROVER_TEST_WORKER_LOG", "info");
        let account = TestAccount { config, work_dir, workers: vec![], monitors: vec![], pools: vec![], worker_log };
        account.s3().await.create_bucket().bucket(BUCKET).send().await.ok();
        account
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.config.account
    }

    /// An `s3://` URL under this account's prefix.
    pub fn s3_url(&self, path: &str) -> String {
        format!("s3://{BUCKET}/{}/{path}", self.name())
    }

    /// Points `cmd` at this account's services (the variables `drover` and `drover-worker` read).
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("DROVER_AMQP_URL", self.config.amqp_url_list())
            .env("DROVER_REDIS_URL", &self.config.redis_url)
            .env("DROVER_S3_ENDPOINT", self.config.s3_endpoint.as_deref().unwrap_or(DEFAULT_S3))
            .env("DROVER_BUCKET", &self.config.bucket)
            .env("DROVER_ACCOUNT", &self.config.account)
            .env("AWS_ACCESS_KEY_ID", env_or("AWS_ACCESS_KEY_ID", "drover"))
            .env("AWS_SECRET_ACCESS_KEY", env_or("AWS_SECRET_ACCESS_KEY", "drover-secret"))
            .env("AWS_REGION", env_or("AWS_REGION", "us-east-1"));
        match self.config.redis_wait_replicas {
            Some(n) => cmd.env("DROVER_REDIS_WAIT_REPLICAS", n.to_string()),
            None => cmd.env_remove("DROVER_REDIS_WAIT_REPLICAS"),
        };
        match &self.config.signing_key_file {
            Some(path) => cmd.env("DROVER_SIGNING_KEY_FILE", path),
            None => cmd.env_remove("DROVER_SIGNING_KEY_FILE"),
        };
        match &self.config.ca_file {
            Some(path) => cmd.env("DROVER_CA_FILE", path),
            None => cmd.env_remove("DROVER_CA_FILE"),
        };
    }

    /// Gives the account signing keys (`<key-id> <secret>` lines): every program signs or checks
    /// its tasks with them from now on.
    pub fn sign_with(&mut self, keys: &str) -> PathBuf {
        let path = self.work_dir.join("signing.keys");
        std::fs::write(&path, keys).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        self.config.signing_key_file = Some(path.clone());
        path
    }

    /// Runs the `drover` CLI for this account and waits for it.
    pub fn drover(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin_dir().join("drover"));
        self.env(&mut cmd);
        // JSON unless the test asks for a table (a later -o wins).
        cmd.args(["-o", "json"]).args(args).stdin(Stdio::null()).output().expect("run drover").into()
    }

    /// Starts the `drover` CLI for this account without waiting: its stdout and stderr are
    /// pipes, for a test that follows what it says as it runs.
    pub fn drover_child(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new(bin_dir().join("drover"));
        self.env(&mut cmd);
        cmd.args(["-o", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drover")
    }

    /// Like [`TestAccount::drover`], but the command must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.drover(args);
        assert_eq!(run.code, 0, "drover {args:?} failed: {run:?}");
        run
    }

    /// A task's file (`stdout.txt`, `stderr.txt`), fetched with `drover task file download`.
    pub fn task_file(&self, job: &str, task: &str, file: &str) -> String {
        let dest = self.work_dir.join(format!("download-{job}-{task}-{file}"));
        let path = dest.to_str().unwrap();
        self.ok(&[
            "task",
            "file",
            "download",
            "--job-id",
            job,
            "--task-id",
            task,
            "--file-path",
            file,
            "--destination",
            path,
        ]);
        std::fs::read_to_string(&dest).unwrap()
    }

    /// Adds `tasks` to `job` through a JSON Lines task file; the command must succeed.
    pub fn add_tasks(&self, job: &str, tasks: &[serde_json::Value]) {
        let body: String = tasks.iter().map(|t| format!("{t}\n")).collect();
        let file = self.file(&format!("tasks-{job}.jsonl"), &body);
        self.ok(&["task", "create", "--job-id", job, "--json-file", file.to_str().unwrap()]);
    }

    /// Runs `drover args` every 100 ms until its JSON output satisfies `holds`, failing the test
    /// with `what` after 30 s; returns that output.
    pub async fn until_json(
        &self,
        args: &[&str],
        what: &str,
        holds: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = serde_json::Value::Null;
        eventually(Duration::from_secs(30), what, || {
            found = self.ok(args).json();
            let hit = holds(&found);
            async move { hit }
        })
        .await;
        found
    }

    /// Creates a pool (and remembers it for cleanup).
    pub fn pool(&mut self, pool: &str, slots: u32) {
        self.ok(&["pool", "create", "--pool-id", pool, "--task-slots-per-node", &slots.to_string()]);
        self.pools.push(pool.into());
    }

    /// Remembers a pool created otherwise (for cleanup).
    pub fn remember_pool(&mut self, pool: &str) {
        self.pools.push(pool.into());
    }

    /// Starts a worker process on `pool`; it is killed when the account is cleaned up.
    pub fn start_worker(&mut self, pool: &str, extra: &[&str]) -> u32 {
        let id = format!("{}-node{}", self.name(), self.workers.len());
        self.start_worker_as(pool, &id, extra)
    }

    /// Starts a worker with the node id `node_id` (a restart under the same id).
    pub fn start_worker_as(&mut self, pool: &str, node_id: &str, extra: &[&str]) -> u32 {
        self.start_worker_in(&[], pool, node_id, extra)
    }

    /// Starts a worker through the command `prefix` (e.g. `ip netns exec NS`), which must exec it.
    pub fn start_worker_in(&mut self, prefix: &[&str], pool: &str, node_id: &str, extra: &[&str]) -> u32 {
        let n = self.workers.len();
        let log = std::fs::File::create(self.work_dir.join(format!("worker-{n}.log"))).unwrap();
        let worker = bin_dir().join("drover-worker");
        let mut cmd = match prefix {
            [] => Command::new(&worker),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&worker);
                cmd
            }
        };
        self.env(&mut cmd);
        cmd.args(["--pool-id", pool, "--node-id", node_id])
            .arg("--work-dir")
            .arg(self.work_dir.join("nodes"))
            .args(extra)
            .env("RUST_LOG", &self.worker_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("start drover-worker");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// Starts `drover-monitor --autoscale` (plus `extra` flags; give each test its own
    /// `--listen`) with the process actuator (its workers live under
    /// `<work dir>/autoscaled`); it is killed when the account is cleaned up, and its workers
    /// leave when it dies.
    pub fn start_monitor(&mut self, extra: &[&str]) -> u32 {
        let n = self.workers.len();
        let log = std::fs::File::create(self.work_dir.join(format!("worker-{n}.log"))).unwrap();
        let mut cmd = Command::new(bin_dir().join("drover-monitor"));
        self.env(&mut cmd);
        cmd.args(["--autoscale", "--actuator", "process"])
            .arg("--work-dir")
            .arg(self.work_dir.join("autoscaled"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("start drover-monitor");
        let pid = child.id();
        self.workers.push(child);
        self.monitors.push(pid);
        pid
    }

    /// Starts `drover-api` for this account with the key `key` (base64) on a port of its own,
    /// which it returns once the API answers; it is killed when the account is cleaned up.
    pub async fn start_api(&mut self, key: &str) -> u16 {
        self.start_api_with(key, &[]).await
    }

    /// [`TestAccount::start_api`] with `extra` flags (`--tls-cert ...`); an empty `key` gives
    /// none (for `--accounts-file`).
    pub async fn start_api_with(&mut self, key: &str, extra: &[&str]) -> u16 {
        let port = free_port();
        let n = self.workers.len();
        let log = std::fs::File::create(self.work_dir.join(format!("worker-{n}.log"))).unwrap();
        let mut cmd = Command::new(bin_dir().join("drover-api"));
        self.env(&mut cmd);
        if !key.is_empty() {
            cmd.env("DROVER_API_KEY", key);
        }
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.workers.push(cmd.spawn().expect("start drover-api"));
        eventually(Duration::from_secs(30), "drover-api listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        port
    }

    /// The worker logs so far (for assertion messages).
    pub fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|n| std::fs::read_to_string(self.work_dir.join(format!("worker-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The status store of this account.
    pub async fn store(&self) -> drover_core::status::StatusStore {
        drover_core::status::StatusStore::connect(&self.config).await.unwrap()
    }

    /// A plain S3 client for checking what landed in storage.
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            env_or("AWS_ACCESS_KEY_ID", "drover"),
            env_or("AWS_SECRET_ACCESS_KEY", "drover-secret"),
            None,
            None,
            "test",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(self.config.s3_endpoint.clone().unwrap())
            .force_path_style(true)
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Uploads `body` to `s3://BUCKET/<account>/<path>`.
    pub async fn put(&self, path: &str, body: &str) {
        self.s3()
            .await
            .put_object()
            .bucket(BUCKET)
            .key(format!("{}/{path}", self.name()))
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }

    /// The object at `s3://BUCKET/<account>/<path>`, if any.
    pub async fn get(&self, path: &str) -> Option<String> {
        let out =
            self.s3().await.get_object().bucket(BUCKET).key(format!("{}/{path}", self.name())).send().await.ok()?;
        let bytes = out.body.collect().await.ok()?.into_bytes();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Writes a file in the test's work directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.work_dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A raw AMQP channel on the broker.
    pub async fn channel(&self) -> lapin::Channel {
        let conn = drover_core::queue::connect(&self.config.broker(), "drover-tests").await.unwrap();
        conn.create_channel().await.unwrap()
    }

    /// Stops the workers and removes every key, queue, exchange and object of the account, and
    /// its work directory unless `keep_dir`. Runs on drop, so a failing test cleans up as well.
    async fn cleanup(&mut self, keep_dir: bool) {
        self.stop_workers();
        let topology = Topology::new(self.name());
        if let Ok(conn) = drover_core::queue::connect(&self.config.broker(), "drover-tests-cleanup").await {
            if let Ok(ch) = conn.create_channel().await {
                for pool in &self.pools {
                    let _ = topology.delete_pool(&ch, pool).await;
                }
                let _ = ch.queue_delete(topology.dead_letters().into(), Default::default()).await;
                let _ = ch.exchange_delete(topology.dead_letters().into(), Default::default()).await;
                let _ = ch.exchange_delete(topology.tasks_exchange().into(), Default::default()).await;
            }
            let _ = conn.close(200, "bye".into()).await;
        }
        if let Ok(client) = redis::Client::open(self.config.redis_url.as_str()) {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                let keys = self.redis_keys(&mut con).await;
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut con).await;
                }
            }
        }
        let s3 = self.s3().await;
        if let Ok(list) = s3.list_objects_v2().bucket(BUCKET).prefix(format!("{}/", self.name())).send().await {
            for o in list.contents() {
                let _ = s3.delete_object().bucket(BUCKET).key(o.key().unwrap_or_default()).send().await;
            }
        }
        if !keep_dir {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }

    /// The account's keys in Redis, and its jobs' (`drover:{A:J}:...`).
    async fn redis_keys(&self, con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for pattern in [format!("drover:{}:*", self.name()), format!("drover:{{{}:*", self.name())] {
            let found: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(con).await.unwrap_or_default();
            keys.extend(found);
        }
        keys
    }

    /// Everything the account holds in Redis, as text: each key and its values.
    pub async fn redis_text(&self) -> String {
        let client = redis::Client::open(self.config.redis_url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let mut text = String::new();
        for key in self.redis_keys(&mut con).await {
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut con).await.unwrap();
            let read = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).clone(),
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                _ => continue,
            };
            let values: redis::Value = read.query_async(&mut con).await.unwrap();
            text.push_str(&format!("{key} {values:?}\n"));
        }
        text
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT", "TERM") to a worker process.
    pub fn signal(&self, pid: u32, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Whether a worker process has exited.
    pub fn worker_exited(&mut self, pid: u32) -> bool {
        self.workers.iter_mut().find(|w| w.id() == pid).is_none_or(|w| matches!(w.try_wait(), Ok(Some(_))))
    }

    /// Waits for a worker process to exit and returns its exit code.
    pub fn wait_worker(&mut self, pid: u32) -> Option<i32> {
        let w = self.workers.iter_mut().find(|w| w.id() == pid)?;
        w.wait().ok()?.code()
    }

    /// Kills every worker this account started. Monitors get SIGTERM first and up to 15 s to stop
    /// the workers they started (else those could declare the account's queues again after the
    /// cleanup deleted them).
    pub fn stop_workers(&mut self) {
        for pid in std::mem::take(&mut self.monitors) {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            if let Some(w) = self.workers.iter_mut().find(|w| w.id() == pid) {
                let deadline = std::time::Instant::now() + Duration::from_secs(15);
                while matches!(w.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.workers.clear();
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let logs = if failed { self.worker_logs() } else { String::new() };
        self.stop_workers();
        if failed {
            // A failing test shows the end of what its workers said, and keeps their directory.
            let tail: Vec<&str> = logs.lines().filter(|l| !l.contains(" DEBUG ")).rev().take(60).collect();
            eprintln!("== the last worker log lines (all in {}):", self.work_dir.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
        // Drop may run inside the test's runtime: clean up on a thread with a runtime of its own.
        let mut this = TestAccount {
            config: self.config.clone(),
            work_dir: self.work_dir.clone(),
            workers: vec![],
            monitors: vec![],
            pools: std::mem::take(&mut self.pools),
            worker_log: String::new(),
        };
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(this.cleanup(failed));
            }
            std::mem::forget(this);
        });
        let _ = cleanup.join();
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Polls `check` every 100 ms until it holds, failing the test with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `rabbitmqctl` with `args`, failing the test if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Lowers the broker's consumer timeout (and the tick that enforces it) while alive; restores
/// both with `set_env` when dropped, even if the test fails.
pub struct ConsumerTimeout;

impl ConsumerTimeout {
    pub fn set(millis: u64) -> Self {
        rabbitmqctl(&["eval", &format!("application:set_env(rabbit, consumer_timeout, {millis}), application:set_env(rabbit, channel_tick_interval, 1000).")]);
        ConsumerTimeout
    }
}

impl Drop for ConsumerTimeout {
    fn drop(&mut self) {
        rabbitmqctl(&["eval", "application:set_env(rabbit, consumer_timeout, 1800000), application:set_env(rabbit, channel_tick_interval, 60000)."]);
    }
}

/// Stops the broker application while alive; starts it again when dropped.
pub struct BrokerStopped;

impl BrokerStopped {
    pub fn stop() -> Self {
        rabbitmqctl(&["stop_app"]);
        BrokerStopped
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

/// Awaits `f` for at most `limit`, failing the test with `what` on timeout.
pub async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// Shortcuts for driving the status store's transitions directly, on pool `p` and job `j`.
pub mod transitions {
    use drover_core::status::{AttemptRef, Outbox, Start, StatusStore};

    /// `start_task` of task `task` of job `j` (pool `p`) on `node`.
    pub async fn start(store: &StatusStore, task: &str, node: &str) -> Start {
        store.start_task("p", "j", task, node).await.expect("start_task")
    }

    /// Starts `task` on `node`; returns the new attempt (panics if it did not start).
    pub async fn started(store: &StatusStore, task: &str, node: &str) -> u32 {
        match start(store, task, node).await {
            Start::Started(s) => s.attempt,
            other => panic!("{task} did not start: {other:?}"),
        }
    }

    /// Attempt `attempt` of `task` of job `j` on pool `p`.
    pub fn at(task: &str, attempt: u32) -> AttemptRef<'_> {
        AttemptRef { pool: "p", job: "j", task, attempt }
    }

    /// The task ids of an outbox's messages.
    pub fn ids(outbox: &Outbox) -> Vec<&str> {
        outbox.messages().iter().map(|m| m.task_id.as_str()).collect()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1 (`server.pem`, `server.key`).
pub fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=drover test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}
