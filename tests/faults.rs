//! No task lost, none recorded twice: each test breaks a real service or kills a real worker.
//!
//! The tests in this file run one at a time (they change broker-wide settings or restart
//! services), and every guard restores what it broke when dropped, even when the test fails.

#![allow(clippy::unwrap_used)]

use drover_core::model::node::NodeState;
use drover_core::model::TaskState;
use drover_tests::{
    eventually, BrokerStopped, ConsumerTimeout, Host, PrivateS3, RabbitCluster, Relay, ReplicatedRedis, TestAccount,
};
use serde_json::json;
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn jsonl(tasks: impl IntoIterator<Item = serde_json::Value>) -> String {
    tasks.into_iter().map(|t| format!("{t}\n")).collect()
}

/// Executions recorded in a ledger file (one line per execution: "<task> <node>").
fn executions(ledger: &std::path::Path) -> std::collections::HashMap<String, Vec<String>> {
    let mut runs: std::collections::HashMap<String, Vec<String>> = Default::default();
    for line in std::fs::read_to_string(ledger).unwrap_or_default().lines() {
        let (task, node) = line.split_once(' ').unwrap_or((line, ""));
        runs.entry(task.to_string()).or_default().push(node.to_string());
    }
    runs
}

async fn state_of(acct: &TestAccount, job: &str, task: &str) -> Option<(TaskState, Option<String>)> {
    acct.store().await.task_record(job, task).await.ok().map(|r| (r.state, r.node))
}

/// Creates pool `p`, job `j` and task `t` running `script` (after it logs its execution to the
/// returned ledger), starts worker `node-a` and waits until it runs the task. Returns its pid.
async fn task_running_on_node_a(acct: &mut TestAccount, script: &str) -> (u32, std::path::PathBuf) {
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let cmd = format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}; {script}'", ledger.display());
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "t", "--command-line", &cmd]);
    let pid = acct.start_worker_as("p", "node-a", &[]);
    let acct: &TestAccount = acct;
    eventually(Duration::from_secs(20), "task running on node-a", || async {
        state_of(acct, "j", "t").await == Some((TaskState::Running, Some("node-a".into())))
    })
    .await;
    (pid, ledger)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_task_is_replaced_within_the_lease() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("sigkill").await;
    let (a, ledger) = task_running_on_node_a(&mut acct, "sleep 2").await;
    acct.signal(a, "KILL");
    let killed = Instant::now();
    acct.start_worker_as("p", "node-b", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "40"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let recovered = killed.elapsed();
    eprintln!("SIGKILL: task completed on another node {recovered:.1?} after its worker was killed");
    assert!(recovered < Duration::from_secs(30), "the bound is the node lease (15 s) plus a recheck (5 s)");
    let record = acct.store().await.task_record("j", "t").await.unwrap();
    assert_eq!((record.state, record.node.as_deref(), record.requeue), (TaskState::Completed, Some("node-b"), 1));
    let runs = executions(&ledger);
    assert_eq!(runs["t"], vec!["node-a", "node-b"]);
    let counts = acct.store().await.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.succeeded), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_worker_is_fenced_out_when_it_resumes() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("sigstop").await;
    let (a, _) = task_running_on_node_a(&mut acct, "sleep 1").await;
    acct.signal(a, "STOP");
    let frozen = Instant::now();
    acct.start_worker_as("p", "node-b", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    eprintln!("SIGSTOP: node-b completed the task {:.1?} after node-a froze", frozen.elapsed());
    let before = acct.store().await.task_record("j", "t").await.unwrap();
    assert_eq!((before.node.as_deref(), before.attempt), (Some("node-b"), 2));

    acct.signal(a, "CONT");
    // The resumed node's late outcome is refused, and it carries on with new work.
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "after", "--command-line", "/bin/true"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    eventually(Duration::from_secs(30), "node-a reports its stale outcome", || async {
        acct.worker_logs().contains("a newer attempt owns the task")
    })
    .await;
    let after = acct.store().await.task_record("j", "t").await.unwrap();
    assert_eq!(after, before, "the stale attempt changed nothing");
    let counts = acct.store().await.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.succeeded), (2, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_longer_than_the_consumer_timeout_completes_once() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("ctimeout").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let cmd = format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}; sleep 15'", ledger.display());
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "long", "--command-line", &cmd]);
    let _timeout = ConsumerTimeout::set(5000);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let record = acct.store().await.task_record("j", "long").await.unwrap();
    assert_eq!((record.attempt, record.requeue), (1, 0), "ran once, never requeued");
    assert_eq!(executions(&ledger)["long"].len(), 1);
}

/// A job `j` of `n` short tasks on pool `p`; each task logs its execution to `ledger`.
struct BusyJob {
    ledger: std::path::PathBuf,
    n: usize,
}

/// Adds [`BusyJob`] `j` of `n` tasks on a pool `p` served by two workers.
async fn busy_job(acct: &mut TestAccount, n: usize) -> BusyJob {
    let job = busy_job_tasks(acct, n);
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    job
}

/// [`busy_job`]'s pool, job and tasks, with no worker.
fn busy_job_tasks(acct: &mut TestAccount, n: usize) -> BusyJob {
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let tasks = (0..n).map(|i| {
        json!({"id": format!("t{i:04}"), "commandLine": format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}; sleep 0.02'", ledger.display())})
    });
    let file = acct.file("tasks.jsonl", &jsonl(tasks));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    BusyJob { ledger, n }
}

/// The [`BusyJob`] ends with every task completed and succeeded once in Redis, every task
/// executed; prints how many executions were repeated and the longest the job went without a
/// task completing.
async fn all_completed_once(acct: &TestAccount, job: &BusyJob, label: &str) {
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "300"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let runs = executions(&job.ledger);
    assert_eq!(runs.len(), job.n);
    let repeated: usize = runs.values().map(|r| r.len() - 1).sum();
    let tasks = acct.ok(&["task", "list", "--job-id", "j", "-o", "json"]).json();
    let mut ends: Vec<i64> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["executionInfo"]["endTime"].as_str())
        .filter_map(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .map(|e| e.timestamp_millis())
        .collect();
    ends.sort_unstable();
    let stall = ends.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    eprintln!(
        "{label}: {} tasks completed once each in Redis, {repeated} executions repeated, longest stall {stall} ms",
        job.n
    );
    let n = job.n as u64;
    let counts = acct.store().await.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.succeeded, counts.active, counts.running), (n, n, 0, 0));
}

/// Fails the test unless job `j` is still under way, and says how far it got: a fault that came
/// after the last task completed would test nothing.
async fn still_under_way(acct: &TestAccount, job: &BusyJob, fault: &str) {
    let done = acct.store().await.task_counts("j").await.unwrap().task_counts.completed;
    assert!(done < job.n as u64, "the job ended before the fault ({fault})");
    eprintln!("{fault}: {done} of {} tasks completed", job.n);
}

/// Workers started after this log each outcome they ack (for [`outcomes_are_the_acked_ones`]).
fn log_acked_outcomes(acct: &mut TestAccount) {
    acct.worker_log = "info,drover_core::node::attempt=debug".into();
}

/// Every task's recorded outcome is the one acked: the outcome a worker acked, or found recorded
/// when the message came back (its ack had waited in vain for the replicas), and no later
/// than any acked outcome: none was lost (to a failover) or recorded over by an older attempt.
async fn outcomes_are_the_acked_ones(acct: &TestAccount, job: &BusyJob) {
    let logs = acct.worker_logs();
    let field = |line: &str, name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).map(|v| v.trim_matches('"').to_string()))
    };
    // task -> (attempt, node) of each acked outcome; tasks whose recorded outcome was acked on a
    // redelivery
    let mut acked: std::collections::HashMap<String, Vec<(u32, String)>> = Default::default();
    let mut found: std::collections::HashSet<String> = Default::default();
    for line in logs.lines() {
        if line.contains("the recorded outcome acked") {
            found.insert(field(line, "task=").unwrap_or_else(|| panic!("unreadable log line: {line}")));
        } else if line.contains("outcome acked") {
            let (Some(task), Some(attempt), Some(node)) =
                (field(line, "task="), field(line, "attempt="), field(line, "node="))
            else {
                panic!("unreadable log line: {line}")
            };
            acked.entry(task).or_default().push((attempt.parse().unwrap(), node));
        }
    }
    let store = acct.store().await;
    let (mut again, mut on_redelivery) = (0, 0);
    for i in 0..job.n {
        let task = format!("t{i:04}");
        let record = store.task_record("j", &task).await.unwrap();
        let recorded = (record.attempt, record.node.clone().unwrap_or_default());
        let outcomes = acked.get(&task).cloned().unwrap_or_default();
        if let Some(last) = outcomes.iter().max() {
            assert!(recorded.0 >= last.0, "{task}: recorded {recorded:?}, yet acked {outcomes:?}");
        }
        if !outcomes.contains(&recorded) {
            assert!(found.contains(&task), "{task}: recorded {recorded:?}, never acked (acked {outcomes:?})");
            on_redelivery += 1;
        }
        again += usize::from(outcomes.len() > 1);
    }
    eprintln!(
        "every recorded outcome is the one acked: {on_redelivery} acked when their message came back, {again} with an earlier acked outcome run again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_restarted_mid_job_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("brokerrestart").await;
    let job = busy_job(&mut acct, 1000).await;
    eventually(Duration::from_secs(30), "some tasks completed", || async {
        acct.store().await.task_counts("j").await.unwrap().task_counts.completed >= 30
    })
    .await;
    {
        let _stopped = BrokerStopped::stop();
        still_under_way(&acct, &job, "broker stopped").await;
        tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself
    }
    all_completed_once(&acct, &job, "broker restart").await;
}

/// A Redis of the test's own, with the production persistence setting (AOF, fsync every second),
/// which the test can restart; shut down when dropped.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    /// Starts it and points `acct` at it.
    async fn start(acct: &mut TestAccount) -> Self {
        let redis =
            PrivateRedis { port: 20000 + (std::process::id() % 10000) as u16, dir: acct.work_dir.join("redis") };
        std::fs::create_dir_all(&redis.dir).unwrap();
        redis.launch().await;
        acct.config.redis_url = format!("redis://127.0.0.1:{}/0", redis.port);
        redis
    }

    async fn launch(&self) {
        let out = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "everysec", "--save", "", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        eventually(Duration::from_secs(10), "private redis up", || async {
            redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.is_ok()
        })
        .await;
    }

    /// Shuts it down (flushing the AOF), waits `outage`, starts it again on the same files.
    async fn restart(&self, outage: Duration) {
        let out =
            std::process::Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        tokio::time::sleep(outage).await; // the outage itself
        self.launch().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_mid_job_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("redisrestart").await;
    let redis = PrivateRedis::start(&mut acct).await;
    let job = busy_job(&mut acct, 300).await;
    eventually(Duration::from_secs(30), "some tasks completed", || async {
        std::fs::read_to_string(&job.ledger).unwrap_or_default().lines().count() >= 30
    })
    .await;
    still_under_way(&acct, &job, "redis about to stop").await;
    redis.restart(Duration::from_secs(3)).await;
    all_completed_once(&acct, &job, "redis restart").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_hands_back_what_is_left() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("drain").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "short", "--command-line", "/bin/sleep 2"]);
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "long", "--command-line", "/bin/sleep 60"]);
    let a = acct.start_worker_as("p", "node-a", &["--drain-timeout", "4"]);
    eventually(Duration::from_secs(20), "both tasks running", || async {
        acct.store().await.task_counts("j").await.unwrap().task_counts.running == 2
    })
    .await;
    acct.signal(a, "TERM");
    assert_eq!(acct.wait_worker(a), Some(0), "{}", acct.worker_logs());
    let short = acct.store().await.task_record("j", "short").await.unwrap();
    assert_eq!((short.state, short.exit), (TaskState::Completed, Some(0)), "finished within the drain timeout");
    let long = acct.store().await.task_record("j", "long").await.unwrap();
    assert_eq!((long.state, long.requeue, long.fail), (TaskState::Active, 1, None), "handed back, not failed");
    // Another node picks the handed-back task up at once.
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "probe", "--command-line", "/bin/true"]);
    acct.start_worker_as("p", "node-b", &[]);
    eventually(Duration::from_secs(20), "the handed-back task runs on node-b", || async {
        state_of(&acct, "j", "long").await == Some((TaskState::Running, Some("node-b".into())))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_kills_its_worker_every_time_is_failed_not_looped() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("poison").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    // The worker is the task's parent: the task (an admin, as only an admin may) kills it, every
    // time it runs.
    let task = json!({"id": "poison", "commandLine": "/bin/sh -c 'kill -9 $PPID'",
                      "userIdentity": {"autoUser": {"elevationLevel": "admin"}}});
    let file = acct.file("poison.json", &task.to_string());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    // Act as the node's supervisor: restart the worker under the same id whenever it dies.
    let mut pid = acct.start_worker_as("p", "node-a", &[]);
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while state_of(&acct, "j", "poison").await.map(|s| s.0) != Some(TaskState::Completed) {
        assert!(Instant::now() < deadline, "the poison task was not recorded as failed:\n{}", acct.worker_logs());
        if acct.worker_exited(pid) {
            restarts += 1;
            assert!(restarts <= 8, "the task kept killing workers:\n{}", acct.worker_logs());
            pid = acct.start_worker_as("p", "node-a", &[]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "poison"]).json();
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "NodeLostRepeatedly", "{t}");
    assert_eq!(t["executionInfo"]["failureInfo"]["category"], "serverError", "{t}");
    eprintln!("poison: recorded as failed after {restarts} worker deaths");
    let counts = acct.store().await.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.failed), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_stopped_during_staging_is_waited_out_within_the_retry_budget() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("s3outage").await;
    let mut s3 = PrivateS3::start(acct.work_dir.join("s3")).await;
    acct.config.s3_endpoint = Some(s3.endpoint());
    acct.s3().await.create_bucket().bucket(drover_tests::BUCKET).send().await.unwrap();
    acct.put("in/data.txt", "payload\n").await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let (input, out) = (acct.s3_url("in/data.txt"), acct.s3_url("out"));
    let task = |id: &str| {
        json!({"id": id, "commandLine": "/bin/sh -c 'cp data.txt result.txt'",
               "resourceFiles": [{"httpUrl": input, "filePath": "data.txt"}],
               "outputFiles": [{"filePattern": "result.txt", "destination": {"container": {"containerUrl": format!("{out}/{id}")}}}]})
    };
    let file = acct.file("tasks.jsonl", &jsonl((0..3).map(|i| task(&format!("t{i}")))));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);

    s3.stop();
    acct.start_worker("p", &[]);
    eventually(Duration::from_secs(20), "tasks staging while storage is down", || async {
        state_of(&acct, "j", "t0").await.map(|s| s.0) == Some(TaskState::Preparing)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
    s3.resume().await;
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    for i in 0..3 {
        assert_eq!(acct.get(&format!("out/t{i}/result.txt")).await.as_deref(), Some("payload\n"));
    }

    // Past the retry budget the task fails with a clear reason, and nothing half-written appears.
    acct.stop_workers();
    acct.ok(&["job", "create", "--job-id", "j2", "--pool-id", "p"]);
    let file = acct.file("late.jsonl", &jsonl([task("late")]));
    acct.ok(&["task", "create", "--job-id", "j2", "--json-file", file.to_str().unwrap()]);
    s3.stop();
    acct.start_worker("p", &["--storage-retry-seconds", "2"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j2", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let late = acct.store().await.task_record("j2", "late").await.unwrap();
    let failure = late.fail.unwrap();
    assert_eq!(failure.code, "ResourceFileDownloadError");
    assert!(failure.message.contains("gave up after"), "{}", failure.message);
    s3.resume().await;
    assert_eq!(acct.get("out/late/result.txt").await, None);
}

/// Tasks of job `j` completed so far (0 while Redis is unreachable).
async fn completed(acct: &TestAccount) -> u64 {
    let Ok(client) = redis::Client::open(acct.config.redis_url.as_str()) else { return 0 };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else { return 0 };
    let key = format!("drover:{{{}:j}}:job", acct.name());
    redis::cmd("HGET").arg(key).arg("completed").query_async::<Option<u64>>(&mut con).await.ok().flatten().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_random_worker_kills_and_service_restarts() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("soak").await;
    let redis = PrivateRedis::start(&mut acct).await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    const N: u64 = 2000;
    let out = acct.s3_url("out");
    let tasks = (0..N).map(|i| {
        json!({"id": format!("t{i:04}"),
               // The sleep paces the job (12 slots: at most 120 tasks/s) so that both restarts
               // and the kills land mid-job however fast the farm is.
               "commandLine": format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}; sleep 0.1; echo $DROVER_TASK_ID > out.txt'", ledger.display()),
               "outputFiles": [{"filePattern": "out.txt", "destination": {"container": {"containerUrl": out, "path": format!("t{i:04}.txt")}}}]})
    });
    let file = acct.file("tasks.jsonl", &jsonl(tasks));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    let nodes = ["node-0", "node-1", "node-2"];
    let mut pids: Vec<u32> = nodes.iter().map(|n| acct.start_worker_as("p", n, &[])).collect();
    let started = Instant::now();
    let (mut kills, mut broker_restarted, mut redis_restarted) = (0, false, false);
    let mut last_kill = Instant::now();
    loop {
        let done = completed(&acct).await;
        if done == N {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "soak did not finish: {done} of {N}\n{}",
            acct.worker_logs()
        );
        if !broker_restarted && done >= N / 3 {
            broker_restarted = true;
            let _stopped = BrokerStopped::stop();
            tokio::time::sleep(Duration::from_secs(2)).await; // the outage itself
        } else if !redis_restarted && done >= 2 * N / 3 {
            redis_restarted = true;
            redis.restart(Duration::from_secs(2)).await;
        }
        // SIGKILL a worker at random every ~3 s and restart it under the same node id.
        if last_kill.elapsed() >= Duration::from_secs(3) {
            let victim = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
                % 3) as usize;
            acct.signal(pids[victim], "KILL");
            acct.wait_worker(pids[victim]);
            pids[victim] = acct.start_worker_as("p", nodes[victim], &[]);
            kills += 1;
            last_kill = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(broker_restarted && redis_restarted, "both restarts happened");
    assert!(kills >= 3, "only {kills} worker kills");
    let store = acct.store().await;
    let counts = store.task_counts("j").await.unwrap().task_counts;
    let mut failures = Vec::new();
    store
        .for_each_task("j", None, |t| {
            if let Some(f) = t.execution_info.as_ref().and_then(|e| e.failure_info.clone()) {
                failures.push((t.spec.id, f));
            }
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(
        (counts.completed, counts.succeeded, counts.failed, counts.active, counts.running),
        (N, N, 0, 0, 0),
        "failures: {failures:?}"
    );
    let mut completed_once = 0;
    store
        .for_each_task("j", None, |t| {
            assert_eq!(t.state, TaskState::Completed);
            completed_once += 1;
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(completed_once, N);
    let runs = executions(&ledger);
    assert_eq!(runs.len() as u64, N, "every task executed");
    let repeated: usize = runs.values().map(|r| r.len() - 1).sum();
    let s3 = acct.s3().await;
    let mut objects = 0;
    let mut pages = s3
        .list_objects_v2()
        .bucket(drover_tests::BUCKET)
        .prefix(format!("{}/out/", acct.name()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        objects += page.unwrap().contents().len();
    }
    assert_eq!(objects as u64, N, "every output object exists");
    eprintln!(
        "soak: {N} tasks in {:.0?}, {kills} worker kills, one broker and one Redis restart: every task completed once in Redis, {repeated} executions repeated",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submitter_killed_mid_file_strands_no_task() {
    let mut acct = TestAccount::new("subkill").await;
    acct.pool("p", 8);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    const N: u64 = 50_000;
    let tasks = (0..N).map(|i| json!({"id": format!("t{i:05}"), "commandLine": "/bin/true"}));
    let file = acct.file("tasks.jsonl", &jsonl(tasks));
    let mut submitter = acct.drover_child(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    let store = acct.store().await;
    eventually(Duration::from_secs(60), "the submitter records some tasks", || async {
        store.task_counts("j").await.map(|c| c.task_counts.active > 0).unwrap_or(false)
    })
    .await;
    submitter.kill().unwrap();
    submitter.wait().unwrap();
    let recorded = store.task_counts("j").await.unwrap().task_counts.active;
    let pending = store.stale_outboxes("j", Duration::ZERO).await.unwrap();
    assert!(
        recorded < N && !pending.is_empty(),
        "killed mid-file: {recorded} recorded, {} outboxes pending",
        pending.len()
    );
    // No person acts: the workers' sweep publishes what the dead submitter left.
    acct.start_worker("p", &[]);
    eventually(Duration::from_secs(240), "every recorded task completes", || async {
        store.task_counts("j").await.map(|c| c.task_counts.completed == recorded).unwrap_or(false)
    })
    .await;
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.active, counts.running, counts.completed, counts.succeeded), (0, 0, recorded, recorded));
    // The submitter may have died after publishing an outbox but before clearing it: its tasks
    // complete without the sweep, which publishes it again (harmless) and clears it once it is
    // a minute old (sweeps every 10 s); a sweep also clears an outbox only after the broker
    // confirmed all of it, so its last tasks can complete first.
    eventually(Duration::from_secs(90), "every outbox was published and cleared", || async {
        store.stale_outboxes("j", Duration::ZERO).await.map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
}

/// The node state `node-a` of pool `p` reports.
async fn node_state(acct: &TestAccount) -> Option<NodeState> {
    let nodes = acct.store().await.list_nodes("p").await.ok()?;
    nodes.into_iter().find(|n| n.id == "node-a").map(|n| n.state)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_fails_over_to_the_next_broker_node_and_says_when_none_answers() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("amqpfailover").await;
    // Two "nodes" of a broker: relays to the one test broker, each of which the test can cut.
    let direct = acct.config.amqp_url[0].clone();
    let upstream =
        direct.split_once('@').map_or("127.0.0.1:5672", |(_, r)| r.split('/').next().unwrap_or(r)).to_string();
    let first = Relay::start(&upstream, 0).await;
    let second = Relay::start(&upstream, 0).await;
    let job = busy_job_tasks(&mut acct, 300);
    // Only the worker goes through the relays; the test's own commands and the account's
    // cleanup (even when the test fails, after the relays are gone) reach the broker directly.
    acct.config.amqp_url = vec![first.amqp_url(&direct), second.amqp_url(&direct)];
    acct.start_worker_as("p", "node-a", &[]);
    acct.config.amqp_url = vec![direct.clone()];
    eventually(Duration::from_secs(30), "some tasks completed", || async { completed(&acct).await >= 30 }).await;

    // The node the worker uses dies mid-job: it goes on through the other.
    first.cut();
    still_under_way(&acct, &job, "first broker node cut").await;
    all_completed_once(&acct, &job, "broker node lost").await;
    assert!(acct.worker_logs().contains("connected to another broker node"), "{}", acct.worker_logs());
    eventually(Duration::from_secs(10), "node-a idle", || async { node_state(&acct).await == Some(NodeState::Idle) })
        .await;

    // No node answers: the worker says so, and takes tasks again once one is back.
    second.cut();
    eventually(Duration::from_secs(20), "node-a unknown with no broker", || async {
        node_state(&acct).await == Some(NodeState::Unknown)
    })
    .await;
    let second = second.restart().await;
    eventually(Duration::from_secs(30), "node-a idle once a broker node answers", || async {
        node_state(&acct).await == Some(NodeState::Idle)
    })
    .await;
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "after", "--command-line", "/bin/true"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    drop(second);
}

/// A 5,000-task [`BusyJob`] on a Redis behind sentinels, whose master `fault` fails or removes
/// once 30 tasks have completed; the job completes with every task once, each recorded outcome
/// the one acked, nothing dead-lettered.
async fn redis_master_lost_mid_job(test: &str, fault: impl AsyncFnOnce(&ReplicatedRedis) -> u16) {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new(test).await;
    let ha = ReplicatedRedis::start(&acct.work_dir).await;
    acct.config.redis_url = ha.url();
    log_acked_outcomes(&mut acct);
    let job = busy_job(&mut acct, 5000).await;
    eventually(Duration::from_secs(30), "some tasks completed", || async {
        acct.store().await.task_counts("j").await.is_ok_and(|c| c.task_counts.completed >= 30)
    })
    .await;
    still_under_way(&acct, &job, "master about to go").await;
    let from = ha.master();
    let started = Instant::now();
    let to = fault(&ha).await;
    eprintln!("{test}: master {from} -> {to} in {:?}", started.elapsed());
    all_completed_once(&acct, &job, test).await;
    outcomes_are_the_acked_ones(&acct, &job).await;
    assert_eq!(acct.ok(&["dead-letter", "list"]).json(), json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_failover_mid_job_loses_nothing() {
    redis_master_lost_mid_job("sentinelfailover", async |ha| ha.failover().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_master_killed_mid_job_loses_nothing() {
    redis_master_lost_mid_job("sentinelkill", async |ha| ha.kill_master().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quorum_queue_leader_killed_mid_job_loses_nothing() {
    let _serial = SERIAL.lock().await;
    // Declared first, dropped last: the account's cleanup runs while the cluster lives.
    let cluster = RabbitCluster::start();
    let mut acct = TestAccount::new("rabbitcluster").await;
    acct.config.amqp_url = cluster.urls(0);
    let job = busy_job_tasks(&mut acct, 2000);
    log_acked_outcomes(&mut acct);
    let leader = cluster.leader_of(&drover_core::queue::Topology::new(acct.name()).pool_queue("p"));
    // One worker connected to the leader's node, one to the next node.
    acct.config.amqp_url = cluster.urls(leader);
    acct.start_worker_as("p", "node-a", &[]);
    acct.config.amqp_url = cluster.urls(leader + 1);
    acct.start_worker_as("p", "node-b", &[]);
    eventually(Duration::from_secs(30), "some tasks completed", || async { completed(&acct).await >= 30 }).await;
    cluster.kill(leader);
    still_under_way(&acct, &job, "queue leader killed").await;
    all_completed_once(&acct, &job, "quorum queue leader killed").await;
    outcomes_are_the_acked_ones(&acct, &job).await;
    assert!(acct.worker_logs().contains("connected to another broker node"), "{}", acct.worker_logs());
    assert_eq!(acct.ok(&["dead-letter", "list"]).json(), json!([]));
    drop(acct);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_mid_task_has_its_tasks_finished_elsewhere_and_its_late_results_refused() {
    let _serial = SERIAL.lock().await;
    let mut acct = TestAccount::new("netsplit").await;
    let (amqp, redis) = (acct.config.amqp_url[0].clone(), acct.config.redis_url.clone());
    let s3 = acct.config.s3_endpoint.clone().unwrap();
    let services = [amqp.as_str(), redis.as_str(), s3.as_str()];
    // Two hosts, each reaching the services only through its own link.
    let (a, b) = (Host::start(0, &services).await, Host::start(1, &services).await);
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    for t in ["t1", "t2"] {
        let cmd = format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}; sleep 3'", ledger.display());
        acct.ok(&["task", "create", "--job-id", "j", "--task-id", t, "--command-line", &cmd]);
    }
    let direct = acct.config.clone();
    let start_on = |acct: &mut TestAccount, host: &Host, node: &str| {
        acct.config.amqp_url = vec![host.url(&amqp)];
        acct.config.redis_url = host.url(&redis);
        acct.config.s3_endpoint = Some(host.url(&s3));
        acct.start_worker_in(&host.exec(), "p", node, &[]);
        acct.config = direct.clone();
    };
    start_on(&mut acct, &a, "node-a");
    eventually(Duration::from_secs(30), "both tasks running on node-a", || async {
        let mut on_a = 0;
        for t in ["t1", "t2"] {
            on_a += usize::from(state_of(&acct, "j", t).await == Some((TaskState::Running, Some("node-a".into()))));
        }
        on_a == 2
    })
    .await;
    start_on(&mut acct, &b, "node-b");

    a.cut();
    let cut = Instant::now();
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "120"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    eprintln!("host cut off: node-b completed its tasks {:.1?} after node-a lost the network", cut.elapsed());
    let store = acct.store().await;
    let mut before = vec![];
    for t in ["t1", "t2"] {
        let record = store.task_record("j", t).await.unwrap();
        assert_eq!((record.node.as_deref(), record.attempt, record.state), (Some("node-b"), 2, TaskState::Completed));
        before.push(record);
    }

    // Back on the network, node-a's late outcomes are refused.
    a.reconnect();
    eventually(Duration::from_secs(90), "node-a reports both stale outcomes", || async {
        acct.worker_logs().matches("a newer attempt owns the task").count() >= 2
    })
    .await;
    for (t, before) in ["t1", "t2"].into_iter().zip(before) {
        assert_eq!(store.task_record("j", t).await.unwrap(), before, "{t}: the late outcome changed nothing");
    }
    let runs = executions(&ledger);
    assert_eq!((runs["t1"].len(), runs["t2"].len()), (2, 2), "each ran on both hosts: {runs:?}");
    let counts = acct.store().await.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.succeeded), (2, 2));
    assert_eq!(acct.ok(&["dead-letter", "list"]).json(), json!([]));
    drop(acct);
}
