//! The job lifecycle on real services: onAllTasksComplete, terminate and delete with running
//! tasks, task terminate, the job's wall-clock limit, maxParallelTasks, priority, job
//! preparation and release tasks, and commonEnvironmentSettings.

#![allow(clippy::unwrap_used)]

use drover_tests::{eventually, TestAccount};
use serde_json::{json, Value};
use std::time::Duration;

/// Creates job `j` from `spec` (its id and pool are filled in) and adds `tasks`.
fn job_with_tasks(acct: &TestAccount, spec: Value, tasks: &[Value]) {
    let mut spec = spec;
    spec["id"] = json!("j");
    spec["poolInfo"] = json!({"poolId": "p"});
    let job = acct.file("job.json", &spec.to_string());
    acct.ok(&["job", "create", "--json-file", job.to_str().unwrap()]);
    acct.add_tasks("j", tasks);
}

fn show_task(acct: &TestAccount, task: &str) -> Value {
    acct.ok(&["task", "show", "--job-id", "j", "--task-id", task]).json()
}

fn show_job(acct: &TestAccount) -> Value {
    acct.ok(&["job", "show", "--job-id", "j"]).json()
}

fn ms(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap()).unwrap().timestamp_millis()
}

async fn running(acct: &TestAccount, n: u64) {
    let store = acct.store().await;
    eventually(Duration::from_secs(30), &format!("{n} tasks running"), || async {
        store.task_counts("j").await.unwrap().task_counts.running == n
    })
    .await;
}

/// Messages ready in the pool's normal-band queue.
async fn ready(acct: &TestAccount) -> u32 {
    let ch = acct.channel().await;
    let queue = drover_core::queue::Topology::new(acct.name()).pool_queue("p");
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), options, Default::default()).await.unwrap().message_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn all_tasks_complete_ends_the_job_and_job_settings_reach_tasks() {
    let mut acct = TestAccount::new("onall").await;
    acct.pool("p", 2);
    let spec = json!({"onAllTasksComplete": "terminatejob",
        "commonEnvironmentSettings": [{"name": "A", "value": "job-a"}, {"name": "B", "value": "job-b"}]});
    let tasks: Vec<Value> = (0..3)
        .map(|n| {
            json!({"id": format!("t{n}"), "commandLine": "/bin/sh -c 'echo \"$A $B\"'",
            "environmentSettings": [{"name": "B", "value": "task-b"}]})
        })
        .collect();
    job_with_tasks(&acct, spec, &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    let store = acct.store().await;
    eventually(Duration::from_secs(10), "the job completes", || async {
        store.get_job("j").await.unwrap().state == drover_core::model::JobState::Completed
    })
    .await;
    let job = show_job(&acct);
    assert_eq!(job["executionInfo"]["terminateReason"], "AllTasksComplete", "{job}");
    assert!(job["executionInfo"]["endTime"].is_string());
    assert_eq!(
        acct.task_file("j", "t1", "stdout.txt"),
        "job-a task-b
",
        "task settings override the job's"
    );
    let refused = acct.drover(&["task", "create", "--job-id", "j", "--task-id", "late", "--command-line", "/bin/true"]);
    assert!(refused.code == 1 && refused.stderr.contains("completed"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_kills_running_tasks_and_queued_ones_never_start() {
    let mut acct = TestAccount::new("terminate").await;
    acct.pool("p", 2);
    let mut tasks: Vec<Value> =
        (0..2).map(|n| json!({"id": format!("long{n}"), "commandLine": "/bin/sleep 600"})).collect();
    tasks.extend((0..3).map(|n| json!({"id": format!("queued{n}"), "commandLine": "/bin/true"})));
    job_with_tasks(&acct, json!({}), &tasks);
    acct.start_worker("p", &[]);
    running(&acct, 2).await;

    let job = acct.ok(&["job", "terminate", "--job-id", "j", "--terminate-reason", "enough"]).json();
    assert_eq!(job["state"], "terminating", "tasks still run: {job}");
    let store = acct.store().await;
    eventually(Duration::from_secs(15), "the job completes once its tasks are killed", || async {
        store.get_job("j").await.unwrap().state == drover_core::model::JobState::Completed
    })
    .await;
    assert_eq!(show_job(&acct)["executionInfo"]["terminateReason"], "enough");
    for n in 0..2 {
        let t = show_task(&acct, &format!("long{n}"));
        assert_eq!(t["state"], "completed");
        assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskTerminated", "{t}");
    }
    // The queued messages reach the worker, which drops them: the queue empties, nothing ran.
    eventually(Duration::from_secs(15), "the queued messages are dropped", || async { ready(&acct).await == 0 }).await;
    for n in 0..3 {
        let t = show_task(&acct, &format!("queued{n}"));
        assert_eq!(t["state"], "active", "{t}");
        assert!(t["executionInfo"].is_null(), "a queued task never started: {t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn task_terminate_kills_one_task_and_the_node_carries_on() {
    let mut acct = TestAccount::new("taskterm").await;
    acct.pool("p", 2);
    job_with_tasks(&acct, json!({}), &[json!({"id": "long", "commandLine": "/bin/sleep 600"})]);
    acct.start_worker("p", &[]);
    running(&acct, 1).await;
    let t = acct.ok(&["task", "terminate", "--job-id", "j", "--task-id", "long"]).json();
    assert_eq!(t["state"], "completed", "terminate waits for the kill: {t}");
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskTerminated");
    let again = acct.drover(&["task", "terminate", "--job-id", "j", "--task-id", "long"]);
    assert!(again.code == 1 && again.stderr.contains("already completed"), "{again:?}");
    let unknown = acct.drover(&["task", "terminate", "--job-id", "j", "--task-id", "nope"]);
    assert!(unknown.code == 1 && unknown.stderr.contains("nope"), "{unknown:?}");
    acct.add_tasks("j", &[json!({"id": "next", "commandLine": "/bin/true"})]);
    eventually(Duration::from_secs(15), "the node runs the next task", || async {
        show_task(&acct, "next")["state"] == "completed"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_kills_running_tasks_and_drops_queued_messages() {
    let mut acct = TestAccount::new("delete").await;
    acct.pool("p", 1);
    let pid_file = acct.work_dir.join("pid");
    let mut tasks = vec![
        json!({"id": "long", "commandLine": format!("/bin/sh -c 'echo $$ > {}; exec sleep 600'", pid_file.display())}),
    ];
    tasks.extend((0..3).map(|n| json!({"id": format!("queued{n}"), "commandLine": "/bin/true"})));
    job_with_tasks(&acct, json!({}), &tasks);
    acct.start_worker("p", &[]);
    running(&acct, 1).await;
    eventually(Duration::from_secs(10), "the task wrote its pid", || async { pid_file.exists() }).await;
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    acct.ok(&["job", "delete", "--job-id", "j"]);
    let gone = acct.drover(&["job", "show", "--job-id", "j"]);
    assert!(gone.code == 1 && gone.stderr.contains("\"j\""), "{gone:?}");
    eventually(Duration::from_secs(15), "the running process is killed", || async {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    eventually(Duration::from_secs(15), "queued messages are dropped", || async { ready(&acct).await == 0 }).await;
    let keys = acct.store().await;
    assert!(keys.job_ids().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_wall_clock_limit_terminates_it() {
    let mut acct = TestAccount::new("jobclock").await;
    acct.pool("p", 1);
    job_with_tasks(
        &acct,
        json!({"constraints": {"maxWallClockTime": "PT3S"}}),
        &[json!({"id": "long", "commandLine": "/bin/sleep 600"})],
    );
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let store = acct.store().await;
    eventually(Duration::from_secs(10), "the job completes", || async {
        store.get_job("j").await.unwrap().state == drover_core::model::JobState::Completed
    })
    .await;
    assert_eq!(show_job(&acct)["executionInfo"]["terminateReason"], "MaxWallClockTimeExpiry");
    assert_eq!(show_task(&acct, "long")["executionInfo"]["failureInfo"]["code"], "TaskTerminated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patched_wall_clock_limit_terminates_the_running_job() {
    let mut acct = TestAccount::new("jobpatch").await;
    acct.pool("p", 1);
    job_with_tasks(&acct, json!({}), &[json!({"id": "long", "commandLine": "/bin/sleep 600"})]);
    acct.start_worker("p", &[]);
    running(&acct, 1).await;
    let patch = |name: &str, change: Value| {
        let file = acct.file(name, &change.to_string());
        acct.drover(&["job", "patch", "--job-id", "j", "--json-file", file.to_str().unwrap()])
    };
    // A task's constraints change too (the running attempt keeps its own).
    let file = acct.file("task.json", &json!({"constraints": {"maxTaskRetryCount": 4}}).to_string());
    let updated =
        acct.ok(&["task", "update", "--job-id", "j", "--task-id", "long", "--json-file", file.to_str().unwrap()]);
    assert_eq!(updated.json()["constraints"]["maxTaskRetryCount"], 4);
    let refused = patch("bad.json", json!({"usesTaskDependencies": true}));
    assert!(refused.code == 1 && refused.stderr.contains("usesTaskDependencies: a job's"), "{refused:?}");
    // A limit of one second from the job's creation: it is past, or soon.
    let patched = patch("limit.json", json!({"priority": 3, "constraints": {"maxWallClockTime": "PT1S"}}));
    assert_eq!(patched.code, 0, "{patched:?}");
    assert_eq!(patched.json()["priority"], 3);
    let store = acct.store().await;
    eventually(Duration::from_secs(20), "the job completes", || async {
        store.get_job("j").await.unwrap().state == drover_core::model::JobState::Completed
    })
    .await;
    assert_eq!(show_job(&acct)["executionInfo"]["terminateReason"], "MaxWallClockTimeExpiry");
    let late = patch("late.json", json!({"priority": 1}));
    assert!(late.code == 1 && late.stderr.contains("only an active job"), "{late:?}");
}

/// The most tasks that ran at the same time, from their start and end times.
fn max_overlap(tasks: &[Value]) -> usize {
    let mut events: Vec<(i64, i32)> = tasks
        .iter()
        .flat_map(|t| [(ms(&t["executionInfo"]["startTime"]), 1), (ms(&t["executionInfo"]["endTime"]), -1)])
        .collect();
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_tasks_caps_the_job_across_the_pool() {
    let mut acct = TestAccount::new("maxpar").await;
    acct.pool("p", 4);
    let tasks: Vec<Value> = (0..12).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/sleep 0.3"})).collect();
    job_with_tasks(&acct, json!({"maxParallelTasks": 2}), &tasks);
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let list = acct.ok(&["task", "list", "--job-id", "j"]).json();
    let most = max_overlap(list.as_array().unwrap());
    println!("maxParallelTasks 2 on 2 nodes x 4 slots: at most {most} tasks ran at once");
    assert!(most <= 2, "{most} tasks ran at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_higher_priority_job_starts_before_a_low_priority_backlog() {
    let mut acct = TestAccount::new("priority").await;
    acct.pool("p", 1);
    for (job, priority) in [("low", -10), ("high", 10)] {
        let spec = json!({"id": job, "poolInfo": {"poolId": "p"}, "priority": priority});
        let file = acct.file(&format!("{job}.json"), &spec.to_string());
        acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    }
    let backlog: Vec<Value> =
        (0..40).map(|n| json!({"id": format!("l{n}"), "commandLine": "/bin/sleep 0.2"})).collect();
    acct.add_tasks("low", &backlog);
    acct.start_worker("p", &[]);
    let store = acct.store().await;
    eventually(Duration::from_secs(30), "the backlog starts", || async {
        store.task_counts("low").await.unwrap().task_counts.completed >= 3
    })
    .await;
    let urgent: Vec<Value> = (0..5).map(|n| json!({"id": format!("h{n}"), "commandLine": "/bin/sleep 0.05"})).collect();
    acct.add_tasks("high", &urgent);
    let wait = acct.drover(&["job", "wait", "--job-id", "high", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    let high = acct.ok(&["task", "list", "--job-id", "high"]).json();
    let low = acct.ok(&["task", "list", "--job-id", "low"]).json();
    let added = high.as_array().unwrap().iter().map(|t| ms(&t["creationTime"])).min().unwrap();
    let last_high = high.as_array().unwrap().iter().map(|t| ms(&t["executionInfo"]["startTime"])).max().unwrap();
    let starts: Vec<i64> = low
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["executionInfo"]["startTime"].as_str().map(|_| ms(&t["executionInfo"]["startTime"])))
        .collect();
    let overtaken = starts.iter().filter(|s| **s > added && **s < last_high).count();
    let still_queued = 40 - starts.iter().filter(|s| **s <= last_high).count();
    println!(
        "priority: 5 high-priority tasks all started within {} ms of being added; {overtaken} low-priority \
         tasks started in between, {still_queued} of 40 were still waiting",
        last_high - added
    );
    assert!(overtaken <= 1, "{overtaken} low-priority tasks started before the high-priority job's");
    assert!(still_queued >= 20, "the backlog was mostly still waiting ({still_queued})");
}

#[tokio::test(flavor = "multi_thread")]
async fn preparation_runs_once_per_node_and_release_when_the_job_ends() {
    let mut acct = TestAccount::new("prep").await;
    acct.pool("p", 3);
    let spec = json!({
        "onAllTasksComplete": "terminatejob",
        "jobPreparationTask": {"commandLine": format!("/bin/sh -c 'echo ready > prepared; echo run >> {}/prep-runs'", acct.work_dir.display())},
        "jobReleaseTask": {"commandLine": format!("/bin/sh -c 'echo done >> {}/released'", acct.work_dir.display())},
    });
    // A task may be called like the preparation's directory: it must not share (and wipe) it.
    let mut tasks = vec![json!({"id": "jobpreparation", "commandLine": "/bin/sh -c 'echo mine > here'"})];
    tasks.extend((0..6).map(
        |n| json!({"id": format!("t{n}"), "commandLine": "/bin/sh -c 'sleep 0.5; cat \"$AZ_BATCH_JOB_PREP_WORKING_DIR/prepared\"'"}),
    ));
    job_with_tasks(&acct, spec, &tasks);
    // Two nodes on one host share the work directory, not their preparations.
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let list = acct.ok(&["task", "list", "--job-id", "j"]).json();
    let nodes: std::collections::BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["nodeInfo"]["nodeId"].as_str().unwrap_or_default().to_string())
        .collect();
    let runs = std::fs::read_to_string(acct.work_dir.join("prep-runs")).unwrap();
    assert_eq!(runs.lines().count(), nodes.len(), "once on each node that ran a task: {nodes:?}");
    let job_dir = acct.work_dir.join("nodes").join(acct.name()).join("jobs/j");
    for node in &nodes {
        let prepared = job_dir.join(".jobpreparation").join(node).join("wd/prepared");
        assert!(prepared.exists(), "the preparation's files survive on {node}");
    }
    assert!(job_dir.join("jobpreparation/wd/here").exists(), "the task ran in a directory of its own");
    eventually(Duration::from_secs(15), "the release task runs on each node when the job ends", || async {
        std::fs::read_to_string(acct.work_dir.join("released")).is_ok_and(|r| r.lines().count() == nodes.len())
    })
    .await;
    eventually(Duration::from_secs(10), "the releases are recorded", || async {
        let status = acct.ok(&["job", "prep-release-status", "--job-id", "j"]).json();
        let all = status.as_array().cloned().unwrap_or_default();
        all.len() == nodes.len()
            && all.iter().all(|n| {
                n["jobPreparationTaskExecutionInfo"]["result"] == "success"
                    && n["jobReleaseTaskExecutionInfo"]["result"] == "success"
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_preparation_fails_the_jobs_tasks_on_that_node() {
    let mut acct = TestAccount::new("prepfail").await;
    acct.pool("p", 2);
    let spec = json!({"jobPreparationTask": {"commandLine": "/bin/sh -c 'exit 7'", "waitForSuccess": true}});
    job_with_tasks(&acct, spec, &[json!({"id": "t0", "commandLine": "/bin/true"})]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let t = show_task(&acct, "t0");
    let failure = &t["executionInfo"]["failureInfo"];
    assert_eq!(failure["code"], "JobPreparationTaskFailed", "{t}");
    assert!(failure["message"].as_str().unwrap().contains("exited with code 7"), "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_still_runs_the_release_of_jobs_it_prepared() {
    let mut acct = TestAccount::new("prepagain").await;
    acct.pool("p", 2);
    let spec = json!({
        "jobPreparationTask": {"commandLine": format!("/bin/sh -c 'echo run >> {}/prep-runs'", acct.work_dir.display())},
        "jobReleaseTask": {"commandLine": format!("/bin/sh -c 'echo done > {}/released'", acct.work_dir.display())},
    });
    job_with_tasks(&acct, spec, &[json!({"id": "t0", "commandLine": "/bin/true"})]);
    let node = format!("{}-n", acct.name());
    let first = acct.start_worker_as("p", &node, &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    // The node dies and comes back under its id; then the job ends.
    acct.signal(first, "KILL");
    acct.wait_worker(first);
    acct.start_worker_as("p", &node, &[]);
    let store = acct.store().await;
    eventually(Duration::from_secs(20), "the node is back", || async {
        store
            .list_nodes("p")
            .await
            .unwrap()
            .iter()
            .any(|n| n.id == node && n.state == drover_core::model::node::NodeState::Idle)
    })
    .await;
    acct.ok(&["job", "terminate", "--job-id", "j"]);
    eventually(Duration::from_secs(15), "the release task runs on the restarted node", || async {
        acct.work_dir.join("released").exists()
    })
    .await;
    assert_eq!(std::fs::read_to_string(acct.work_dir.join("prep-runs")).unwrap(), "run\n", "not prepared again");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_of_a_failing_task_back_off() {
    let mut acct = TestAccount::new("backoff").await;
    acct.pool("p", 2);
    let task = json!({"id": "f", "commandLine": format!("/bin/sh -c 'date +%s%N >> {}/attempts; exit 1'", acct.work_dir.display()),
        "constraints": {"maxTaskRetryCount": 3}});
    job_with_tasks(&acct, json!({}), &[task]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let info = &show_task(&acct, "f")["executionInfo"];
    assert_eq!(info["retryCount"], 3, "{info}");
    let attempts = std::fs::read_to_string(acct.work_dir.join("attempts")).unwrap();
    let starts: Vec<i64> = attempts.lines().map(|l| l.trim().parse::<i64>().unwrap() / 1_000_000).collect();
    assert_eq!(starts.len(), 4, "{attempts}");
    // Each retry waits at least 0.5 s, doubling (lower bounds only: a slow machine waits longer).
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(gap >= 500 << i, "retry {} started {gap} ms after the previous attempt", i + 1);
    }
}

/// The tasks of job `j` parked (by maxParallelTasks or a disabled job), read from Redis.
async fn parked(acct: &TestAccount) -> Vec<String> {
    let client = redis::Client::open(acct.config.redis_url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("drover:{{{}:j}}:parked", acct.name());
    redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut con).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_job_requeues_its_running_task_and_starts_nothing_until_enabled() {
    let mut acct = TestAccount::new("disable").await;
    acct.pool("p", 2);
    job_with_tasks(&acct, json!({}), &[json!({"id": "long", "commandLine": "/bin/sleep 600"})]);
    acct.start_worker("p", &[]);
    running(&acct, 1).await;
    let bad = acct.drover(&["job", "enable", "--job-id", "j"]);
    assert!(bad.code == 1 && bad.stderr.contains("only a disabled job"), "{bad:?}");
    let job = acct.ok(&["job", "disable", "--job-id", "j", "--disable-tasks", "requeue"]).json();
    assert_eq!(job["state"], "disabled", "{job}");
    // The node kills the task and hands it back; its message comes back to the node, which
    // parks it while the job is disabled.
    eventually(Duration::from_secs(20), "the running task is handed back and parked", || async {
        parked(&acct).await == ["long"]
    })
    .await;
    let t = show_task(&acct, "long");
    assert_eq!(t["state"], "active", "{t}");
    assert_eq!(t["executionInfo"]["requeueCount"], 1, "{t}");
    assert_eq!(ready(&acct).await, 0, "the parked task's message was taken and acked");
    acct.ok(&["job", "enable", "--job-id", "j"]);
    running(&acct, 1).await;
    assert!(parked(&acct).await.is_empty());
    // Disabled with `terminate`, a running task is killed and recorded as terminated.
    acct.ok(&["job", "disable", "--job-id", "j", "--disable-tasks", "terminate"]);
    let t = acct
        .until_json(&["task", "show", "--job-id", "j", "--task-id", "long"], "the task is terminated", |t| {
            t["state"] == "completed"
        })
        .await;
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskTerminated", "{t}");
    acct.ok(&["job", "terminate", "--job-id", "j"]);
    let refused = acct.drover(&["job", "disable", "--job-id", "j"]);
    assert!(refused.code == 1 && refused.stderr.contains("only an active or disabled job"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_task_is_reactivated_and_a_deleted_task_keeps_its_place() {
    let mut acct = TestAccount::new("reactivate").await;
    acct.pool("p", 2);
    let tasks = [
        json!({"id": "f", "commandLine": "/bin/false"}),
        json!({"id": "ok", "commandLine": "/bin/true"}),
        json!({"id": "s", "commandLine": "/bin/sleep 600"}),
    ];
    job_with_tasks(&acct, json!({}), &tasks);
    acct.start_worker("p", &[]);
    let done = |t: &Value| t["state"] == "completed";
    let first = acct.until_json(&["task", "show", "--job-id", "j", "--task-id", "f"], "f fails", done).await;
    acct.until_json(&["task", "show", "--job-id", "j", "--task-id", "ok"], "ok succeeds", done).await;
    let refused = acct.drover(&["task", "reactivate", "--job-id", "j", "--task-id", "ok"]);
    assert!(refused.code == 1 && refused.stderr.contains("succeeded"), "{refused:?}");
    acct.ok(&["task", "reactivate", "--job-id", "j", "--task-id", "f"]);
    let again = acct
        .until_json(&["task", "show", "--job-id", "j", "--task-id", "f"], "f runs again", |t| {
            done(t) && t["executionInfo"]["startTime"] != first["executionInfo"]["startTime"]
        })
        .await;
    assert!(ms(&again["executionInfo"]["startTime"]) >= ms(&first["executionInfo"]["endTime"]), "{again}");
    assert_eq!(again["executionInfo"]["exitCode"], 1);
    let store = acct.store().await;
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.failed, counts.succeeded, counts.running), (2, 1, 1, 1), "{counts:?}");
    // Deleting: a running task is terminated first; the counts follow; an id added again keeps
    // its place in the list.
    running(&acct, 1).await;
    acct.ok(&["task", "delete", "--job-id", "j", "--task-id", "s"]);
    acct.ok(&["task", "delete", "--job-id", "j", "--task-id", "f"]);
    let gone = acct.drover(&["task", "show", "--job-id", "j", "--task-id", "f"]);
    assert!(gone.code == 1 && gone.stderr.contains("\"f\""), "{gone:?}");
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.failed, counts.succeeded, counts.running), (1, 0, 1, 0), "{counts:?}");
    acct.add_tasks("j", &[json!({"id": "f", "commandLine": "/bin/true"})]);
    acct.until_json(&["task", "show", "--job-id", "j", "--task-id", "f"], "the new f succeeds", done).await;
    let ids: Vec<Value> = acct
        .ok(&["task", "list", "--job-id", "j"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(ids, [json!("f"), json!("ok")]);
    let missing = acct.drover(&["task", "delete", "--job-id", "j", "--task-id", "s"]);
    assert!(missing.code == 1 && missing.stderr.contains("\"s\""), "{missing:?}");
}
