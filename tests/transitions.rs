//! Every transition script on real Redis, one test each, covering each of its replies; attempts
//! are fenced and counters add up.

#![allow(clippy::unwrap_used)]

use drover_core::model::task::{FailureCode, FailureInfo, TaskResult};
use drover_core::model::{JobAddParameter, JobState, PoolAddParameter, TaskAddParameter};
use drover_core::status::{Completion, Outbox, Outcome, Start, StatusStore, Termination};
use drover_core::Error;
use drover_tests::transitions::{at, ids, start, started};
use drover_tests::TestAccount;
use serde_json::json;

fn task(v: serde_json::Value) -> TaskAddParameter {
    serde_json::from_value(v).unwrap()
}

fn failure() -> Outcome {
    Outcome::failed(FailureInfo::user(FailureCode::FailureExitCode, "exit 1"), Some(1))
}

/// Pool `p` and job `j` (from `job`, whose id and pool are set here).
async fn with_job(acct: &TestAccount, job: serde_json::Value) -> StatusStore {
    let store = acct.store().await;
    store.create_pool(&PoolAddParameter::new("p", 1)).await.unwrap();
    let mut job = job;
    job["id"] = json!("j");
    job["poolInfo"] = json!({"poolId": "p"});
    store.create_job(&serde_json::from_value(job).unwrap()).await.unwrap();
    store
}

/// Adds tasks to job `j` as batch `batch`; returns the outbox of those runnable now.
async fn add(store: &StatusStore, batch: &str, tasks: &[serde_json::Value]) -> Outbox {
    let tasks: Vec<TaskAddParameter> = tasks.iter().cloned().map(task).collect();
    let priority = store.get_job("j").await.unwrap().spec.priority.unwrap_or(0);
    store.add_tasks("j", 0, priority, batch, &tasks).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_job_replies() {
    let acct = TestAccount::new("tcreatejob").await;
    let store = with_job(&acct, json!({})).await;
    // ok is above; dup:
    let again = store.create_job(&JobAddParameter::new("j", "p")).await;
    assert!(matches!(again, Err(Error::Conflict { kind: "job", .. })), "{again:?}");
    // nopool:
    let orphan = store.create_job(&JobAddParameter::new("k", "nopool")).await;
    assert!(matches!(orphan, Err(Error::NotFound { kind: "pool", .. })), "{orphan:?}");
    assert_eq!(store.pool_jobs("p").await.unwrap(), ["j"]);
}

/// One script call with more tasks than one Redis command takes at a time (the script writes
/// the task list, the queued set and the outbox in pieces): every task is listed, queued and
/// published, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_larger_than_one_piece_is_added_whole_and_in_order() {
    let acct = TestAccount::new("tbigbatch").await;
    let store = with_job(&acct, json!({})).await;
    let n = 2_345;
    let tasks: Vec<serde_json::Value> = (0..n).map(|i| json!({"id": format!("t{i:05}"), "commandLine": "x"})).collect();
    let outbox = add(&store, "big", &tasks).await;
    let expected: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
    assert_eq!(ids(&outbox), expected, "the outbox holds every task, in order");
    assert_eq!(store.task_ids("j", 0, n + 10).await.unwrap(), expected, "the task list, in order");
    store.clear_outbox(&outbox).await.unwrap();
    let queued = store.queued_since("j", std::time::Duration::ZERO, n + 10).await.unwrap();
    assert_eq!(queued.len(), n, "every task is queued");
    assert_eq!(store.task_counts("j").await.unwrap().task_counts.active, n as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_job_replies() {
    let acct = TestAccount::new("ttermjob").await;
    let store = with_job(&acct, json!({})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x"})]).await;
    started(&store, "t", "n1").await;
    store.heartbeat("n1").await.unwrap();
    // ok, terminating while a task runs; then state, as it is no longer active.
    assert_eq!(store.terminate_job("j", "UserTerminate").await.unwrap(), JobState::Terminating);
    let twice = store.terminate_job("j", "UserTerminate").await;
    assert!(matches!(&twice, Err(Error::State(m)) if m.contains("terminating")), "{twice:?}");
    assert!(store.pool_jobs("p").await.unwrap().is_empty(), "an ended job leaves the pool's active jobs");
    // The running task's completion completes the job.
    let attempt = store.task_record("j", "t").await.unwrap().attempt;
    assert!(matches!(
        store.complete_task(at("t", attempt), &Outcome::success(), false).await.unwrap(),
        Completion::Completed(_)
    ));
    assert_eq!(store.get_job("j").await.unwrap().state, JobState::Completed);
    // nojob:
    assert!(matches!(store.terminate_job("ghost", "x").await, Err(Error::NotFound { .. })));
    // ok, completed at once when nothing runs.
    store.create_job(&JobAddParameter::new("k", "p")).await.unwrap();
    assert_eq!(store.terminate_job("k", "UserTerminate").await.unwrap(), JobState::Completed);
    store.node_gone("n1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn create_tasks_replies() {
    let acct = TestAccount::new("tcreatetasks").await;
    let store = with_job(&acct, json!({"usesTaskDependencies": true, "priority": 5})).await;
    // ok, with the runnable tasks in the batch's outbox, carrying the job's priority.
    let outbox = add(
        &store,
        "b1",
        &[
            json!({"id": "a", "commandLine": "x"}),
            json!({"id": "c", "commandLine": "x", "dependsOn": {"taskIds": ["a"]}}),
        ],
    )
    .await;
    assert_eq!(ids(&outbox), ["a"]);
    assert_eq!(outbox.messages()[0].priority, 5);
    store.clear_outbox(&outbox).await.unwrap();
    // dup: nothing of the batch is added.
    let dup = store
        .add_tasks(
            "j",
            0,
            5,
            "b2",
            &[task(json!({"id": "new", "commandLine": "x"})), task(json!({"id": "a", "commandLine": "x"}))],
        )
        .await;
    assert!(matches!(&dup, Err(Error::Invalid(m)) if m.contains("\"a\" already exists")), "{dup:?}");
    assert!(store.task_record("j", "new").await.is_err(), "all or nothing");
    // nojob:
    let none = store.add_tasks("ghost", 0, 0, "b3", &[task(json!({"id": "t", "commandLine": "x"}))]).await;
    assert!(matches!(none, Err(Error::NotFound { kind: "job", .. })), "{none:?}");
    // jobstate:
    store.terminate_job("j", "UserTerminate").await.unwrap();
    let ended = store.add_tasks("j", 0, 0, "b4", &[task(json!({"id": "late", "commandLine": "x"}))]).await;
    assert!(matches!(&ended, Err(Error::State(m)) if m.contains("completed")), "{ended:?}");
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!(counts.active + counts.completed, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_task_replies() {
    let acct = TestAccount::new("tstart").await;
    let store = with_job(&acct, json!({"usesTaskDependencies": true, "maxParallelTasks": 1})).await;
    add(
        &store,
        "b",
        &[
            json!({"id": "a", "commandLine": "x", "resourceFiles": [{"httpUrl": "http://127.0.0.1:1/f", "filePath": "f"}]}),
            json!({"id": "b", "commandLine": "x"}),
            json!({"id": "c", "commandLine": "x", "dependsOn": {"taskIds": ["a"]}}),
        ],
    )
    .await;
    // gone: no such task.
    assert!(matches!(start(&store, "ghost", "n1").await, Start::Gone));
    // otherpool: a node of another pool.
    assert!(matches!(store.start_task("q", "j", "a", "n1").await.unwrap(), Start::OtherPool(p) if p == "p"));
    // waiting: c's parent has not completed.
    assert!(matches!(start(&store, "c", "n1").await, Start::Waiting));
    // ok: a stages files, so it starts preparing.
    let a = started(&store, "a", "n1").await;
    assert_eq!(store.task_record("j", "a").await.unwrap().state, drover_core::model::TaskState::Preparing);
    // parked: the job runs maxParallelTasks (1) already.
    assert!(matches!(start(&store, "b", "n2").await, Start::Parked));
    // busy: a live node runs a.
    store.heartbeat("n1").await.unwrap();
    assert!(matches!(start(&store, "a", "n2").await, Start::Busy(n) if n == "n1"));
    store.node_gone("n1").await.unwrap();
    // done: a completed; its outbox (c released, b unparked) comes with the duplicate.
    let done = store.complete_task(at("a", a), &Outcome::success(), false).await.unwrap();
    let Completion::Completed(outbox) = done else { panic!("{done:?}") };
    let mut released = ids(&outbox);
    released.sort();
    assert_eq!(released, ["b", "c"]);
    assert!(matches!(start(&store, "a", "n2").await, Start::Done(o) if o == outbox));
    // poison: b's node is lost again and again.
    let mut poisoned = None;
    for n in 0..=5 {
        match start(&store, "b", &format!("lost{n}")).await {
            Start::Started(_) => {}
            Start::Poison(lost, _) => {
                poisoned = Some((n, lost));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(poisoned, Some((5, 5)), "the fifth lost attempt is the last");
    let b = store.get_task("j", "b").await.unwrap();
    assert_eq!(b.execution_info.unwrap().failure_info.unwrap().code, "NodeLostRepeatedly");
    // inactive: the job ended.
    store.terminate_job("j", "UserTerminate").await.unwrap();
    assert!(matches!(start(&store, "c", "n1").await, Start::Inactive(s) if s == "completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn start_task_takes_over_from_a_live_node_that_let_the_attempt_go() {
    let acct = TestAccount::new("tletgo").await;
    let store = with_job(&acct, json!({})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x"})]).await;
    let first = started(&store, "t", "n1").await;
    store.heartbeat("n1").await.unwrap();
    let info = format!("drover:{}:node:n1:info", acct.name());
    let mut con =
        redis::Client::open(acct.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let beat = |tasks: &'static str, after_ms: i64| {
        let when = chrono::Utc::now().timestamp_millis() + after_ms;
        redis::cmd("HSET").arg(&info).arg("beat").arg(when).arg("tasks").arg(tasks).clone()
    };
    // A heartbeat too soon after the start to list t: n1 may run it.
    let () = beat("[]", 0).query_async(&mut con).await.unwrap();
    assert!(matches!(start(&store, "t", "n2").await, Start::Busy(n) if n == "n1"));
    // Later heartbeats that list t: n1 runs it.
    let () = beat(r#"[["j","t"]]"#, 10_000).query_async(&mut con).await.unwrap();
    assert!(matches!(start(&store, "t", "n2").await, Start::Busy(n) if n == "n1"));
    // A later heartbeat without t: n1 let the attempt go (its outcome lost with a Redis
    // failover), so n2 takes the task over and n1's attempt is fenced out.
    let () = beat("[]", 10_000).query_async(&mut con).await.unwrap();
    let second = started(&store, "t", "n2").await;
    assert!(second > first);
    assert_eq!(store.complete_task(at("t", first), &Outcome::success(), false).await.unwrap(), Completion::Stale);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_task_replies() {
    let acct = TestAccount::new("trun").await;
    let store = with_job(&acct, json!({})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x", "resourceFiles": [{"httpUrl": "http://127.0.0.1:1/f", "filePath": "f"}]})]).await;
    let first = started(&store, "t", "n1").await;
    let second = started(&store, "t", "n2").await; // n1 is dead: taken over
    assert!(!store.run_task(at("t", first)).await.unwrap(), "stale");
    assert!(store.run_task(at("t", second)).await.unwrap(), "ok");
    assert!(!store.run_task(at("t", second)).await.unwrap(), "running already: stale");
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_task_replies_and_fencing() {
    let acct = TestAccount::new("tcomplete").await;
    let store = with_job(&acct, json!({})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x", "constraints": {"maxTaskRetryCount": 1}})]).await;
    let first = started(&store, "t", "n1").await;
    // n1 holds no heartbeat (it died): another node takes the task over.
    let second = started(&store, "t", "n2").await;
    assert!(second > first);
    assert_eq!(store.complete_task(at("t", first), &failure(), false).await.unwrap(), Completion::Stale);
    // retry: back to active, its own message in the outbox.
    let Completion::Retry(1, outbox) = store.complete_task(at("t", second), &failure(), false).await.unwrap() else {
        panic!("retry")
    };
    assert_eq!(ids(&outbox), ["t"]);
    store.clear_outbox(&outbox).await.unwrap();
    assert_eq!(store.task_counts("j").await.unwrap().task_counts.active, 1);
    // completed, once.
    let third = started(&store, "t", "n2").await;
    let Completion::Completed(outbox) = store.complete_task(at("t", third), &failure(), false).await.unwrap() else {
        panic!("completed")
    };
    assert!(outbox.is_empty());
    assert_eq!(
        store.complete_task(at("t", third), &failure(), false).await.unwrap(),
        Completion::Stale,
        "recorded once"
    );
    let info = store.get_task("j", "t").await.unwrap().execution_info.unwrap();
    assert_eq!(
        (info.retry_count, info.requeue_count, info.exit_code, info.result),
        (1, 1, Some(1), Some(TaskResult::Failure))
    );
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.active, counts.running, counts.completed, counts.failed), (0, 0, 1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn release_task_replies() {
    let acct = TestAccount::new("trelease").await;
    let store = with_job(&acct, json!({"priority": -3})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x"})]).await;
    let first = started(&store, "t", "n1").await;
    let Some(outbox) = store.release_task(at("t", first)).await.unwrap() else { panic!("ok") };
    assert_eq!(ids(&outbox), ["t"], "the task's own message goes back through the outbox");
    assert_eq!(outbox.messages()[0].priority, -3);
    assert!(store.release_task(at("t", first)).await.unwrap().is_none(), "stale");
    let record = store.task_record("j", "t").await.unwrap();
    assert_eq!((record.state, record.requeue), (drover_core::model::TaskState::Active, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_task_replies() {
    let acct = TestAccount::new("ttermtask").await;
    let store = with_job(&acct, json!({"usesTaskDependencies": true})).await;
    add(
        &store,
        "b",
        &[
            json!({"id": "a", "commandLine": "x"}),
            json!({"id": "r", "commandLine": "x"}),
            json!({"id": "c", "commandLine": "x", "dependsOn": {"taskIds": ["a"]}}),
        ],
    )
    .await;
    // ok: an active task completes at once; its dependent is blocked (nothing released).
    let Termination::Terminated(outbox) = store.terminate_task("j", "a", true).await.unwrap() else { panic!("ok") };
    assert!(outbox.is_empty());
    assert_eq!(store.dependency_report("j", 10).await.unwrap().unwrap().blocked, 1);
    // completed:
    assert_eq!(store.terminate_task("j", "a", true).await.unwrap(), Termination::AlreadyCompleted);
    // killing: a live node runs r.
    started(&store, "r", "n1").await;
    store.heartbeat("n1").await.unwrap();
    assert_eq!(store.terminate_task("j", "r", false).await.unwrap(), Termination::Killing("n1".into()));
    let watch = store.watch(&[("j".into(), "r".into())], &[]).await.unwrap();
    assert_eq!(watch.kill, [("j".to_string(), "r".to_string())]);
    store.node_gone("n1").await.unwrap();
    // notask:
    assert!(matches!(store.terminate_task("j", "ghost", false).await, Err(Error::NotFound { kind: "task", .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn record_job_task_run_replies() {
    let acct = TestAccount::new("tjobrun").await;
    let store = with_job(&acct, json!({})).await;
    let run = json!({"state": "completed", "result": "success"});
    store.record_node_job_task("j", "n1", "p", "jobPreparationTaskExecutionInfo", run.clone()).await.unwrap();
    let status = store.prep_release_status("j").await.unwrap();
    assert_eq!(status[0]["jobPreparationTaskExecutionInfo"], run);
    // nojob: nothing is written for a job that is gone.
    store.record_node_job_task("ghost", "n1", "p", "jobReleaseTaskExecutionInfo", run).await.unwrap();
    assert!(store.prep_release_status("ghost").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_job_whose_node_was_lost_still_completes() {
    let acct = TestAccount::new("lostterm").await;
    let store = with_job(&acct, json!({})).await;
    add(&store, "b", &[json!({"id": "t", "commandLine": "x"})]).await;
    started(&store, "t", "n1").await;
    // n1 dies (it never heartbeats) while the job is terminated: nobody is left to kill the task.
    assert_eq!(store.terminate_job("j", "UserTerminate").await.unwrap(), JobState::Terminating);
    // Its message comes back to another node, which records the task and so ends the job.
    assert!(matches!(start(&store, "t", "n2").await, Start::Inactive(_)));
    let task = store.get_task("j", "t").await.unwrap();
    assert_eq!(task.execution_info.unwrap().failure_info.unwrap().code, "TaskTerminated");
    assert_eq!(store.get_job("j").await.unwrap().state, JobState::Completed);
}

/// A record is stored, added or by a transition, as MessagePack with one-letter field names, its
/// times relative to its creation and without what a completion implies
/// (lua/includes/record.lua); it reads back whole, failures and a completion from `active` keep
/// what differs, and a record stored as JSON (as added before that format) or as MessagePack
/// with the fields' own names (before the one-letter names) takes its transitions as ever.
#[tokio::test(flavor = "multi_thread")]
async fn records_are_stored_compactly_and_read_back_whole() {
    use drover_core::model::TaskState::{Active, Completed, Running};
    use redis::AsyncCommands;
    let acct = TestAccount::new("trecord").await;
    let store = with_job(&acct, json!({})).await;
    let tasks: Vec<_> =
        ["ok", "bad", "old", "own", "idle"].iter().map(|id| json!({"id": id, "commandLine": "/bin/true"})).collect();
    add(&store, "b", &tasks).await;
    let mut con =
        redis::Client::open(acct.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = |id: &str| format!("drover:{{{}:j}}:t:{id}", acct.name());
    let stored: Vec<u8> = con.get(key("ok")).await.unwrap();
    let added = store.task_record("j", "ok").await.unwrap();
    assert_eq!(stored.first(), Some(&0xc1), "an added task's record is stored as a transition stores it");
    assert!(stored.len() * 3 < serde_json::to_vec(&added).unwrap().len() * 2, "{} bytes stored", stored.len());

    let attempt = started(&store, "ok", "n1").await;
    assert!(matches!(
        store.complete_task(at("ok", attempt), &Outcome::success(), false).await.unwrap(),
        Completion::Completed(_)
    ));
    let stored: Vec<u8> = con.get(key("ok")).await.unwrap();
    let record = store.task_record("j", "ok").await.unwrap();
    let as_json = serde_json::to_vec(&record).unwrap();
    assert_eq!(stored.first(), Some(&0xc1), "the mark of one-letter names");
    assert!(stored.len() * 2 < as_json.len(), "{} bytes stored, {} as JSON", stored.len(), as_json.len());
    let start = record.start.unwrap();
    assert!(
        record.ctime > 1_700_000_000_000 && record.ctime <= start && start <= record.stime,
        "absolute times: {record:?}"
    );
    assert_eq!(
        (record.state, record.prev, record.result, record.exit, record.end, record.fail.as_ref()),
        (Completed, Some(Running), Some(TaskResult::Success), Some(0), Some(record.stime), None)
    );
    // What users see is what the same record stored as JSON shows.
    let shown = serde_json::to_value(store.get_task("j", "ok").await.unwrap()).unwrap();
    let _: () = con.set(key("ok"), &as_json).await.unwrap();
    assert_eq!(serde_json::to_value(store.get_task("j", "ok").await.unwrap()).unwrap(), shown);

    // A failure keeps its result, exit code and failure info; a task ended while active, its
    // previous state.
    let attempt = started(&store, "bad", "n1").await;
    let mut last = failure();
    last.retryable = false;
    assert!(matches!(store.complete_task(at("bad", attempt), &last, false).await.unwrap(), Completion::Completed(_)));
    let record = store.task_record("j", "bad").await.unwrap();
    assert_eq!(
        (record.prev, record.result, record.exit, record.fail.map(|f| f.code)),
        (Some(Running), Some(TaskResult::Failure), Some(1), Some("FailureExitCode".to_string()))
    );
    assert!(matches!(store.terminate_task("j", "idle", false).await.unwrap(), Termination::Terminated(_)));
    let record = store.task_record("j", "idle").await.unwrap();
    assert_eq!((record.state, record.prev, record.result), (Completed, Some(Active), Some(TaskResult::Failure)));

    // A running task's record stored as JSON (as before MessagePack) or as MessagePack with the
    // fields' own names (as before the one-letter names) completes, once.
    for (id, as_json) in [("old", true), ("own", false)] {
        let attempt = started(&store, id, "n1").await;
        let running = store.task_record("j", id).await.unwrap();
        let earlier = if as_json {
            serde_json::to_vec(&running).unwrap()
        } else {
            let mut relative = serde_json::to_value(&running).unwrap();
            for time in ["stime", "start"] {
                relative[time] = json!(relative[time].as_i64().unwrap() - running.ctime);
            }
            rmp_serde::to_vec_named(&relative).unwrap()
        };
        let _: () = con.set(key(id), earlier).await.unwrap();
        assert_eq!(store.task_record("j", id).await.unwrap(), running, "{id}");
        assert!(matches!(
            store.complete_task(at(id, attempt), &Outcome::success(), false).await.unwrap(),
            Completion::Completed(_)
        ));
        assert_eq!(store.complete_task(at(id, attempt), &Outcome::success(), false).await.unwrap(), Completion::Stale);
        let record = store.task_record("j", id).await.unwrap();
        assert_eq!(
            (record.state, record.ctime, record.start, record.attempt),
            (Completed, running.ctime, running.start, attempt),
            "{id}"
        );
    }
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.succeeded, counts.failed), (5, 3, 2));
}
