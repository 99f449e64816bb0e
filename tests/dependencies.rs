//! Task dependencies on real Redis, RabbitMQ and workers: exact release under redelivery,
//! fan-in and chains, dependency actions, and what `job show` says about held tasks.

#![allow(clippy::unwrap_used)]

use drover_core::model::task::{FailureCode, FailureInfo};
use drover_core::model::{JobAddParameter, PoolAddParameter, TaskAddParameter};
use drover_core::status::{Completion, Outbox, Outcome, Start, StatusStore};
use drover_tests::transitions::{at, ids, start, started};
use drover_tests::TestAccount;
use serde_json::json;
use std::time::Instant;

fn task(v: serde_json::Value) -> TaskAddParameter {
    serde_json::from_value(v).unwrap()
}

fn outcome(success: bool) -> Outcome {
    if success {
        Outcome::success()
    } else {
        Outcome {
            retryable: false,
            ..Outcome::failed(FailureInfo::user(FailureCode::FailureExitCode, "exit 1"), Some(1))
        }
    }
}

/// Pool `p` and a job `j` on it that uses task dependencies.
async fn dependency_job(acct: &TestAccount) -> StatusStore {
    let store = acct.store().await;
    store.create_pool(&PoolAddParameter::new("p", 1)).await.unwrap();
    let mut job = JobAddParameter::new("j", "p");
    job.uses_task_dependencies = Some(true);
    job.priority = Some(7);
    store.create_job(&job).await.unwrap();
    store
}

/// Starts and completes `id` on node n1; returns what the completion released.
async fn run(store: &StatusStore, id: &str, success: bool) -> Outbox {
    let attempt = started(store, id, "n1").await;
    match store.complete_task(at(id, attempt), &outcome(success), !success).await.unwrap() {
        Completion::Completed(released) => released,
        other => panic!("{id}: {other:?}"),
    }
}

/// Adds tasks to job `j` (priority 7) as one batch; returns the outbox of those runnable now.
async fn add(store: &StatusStore, tasks: &[TaskAddParameter]) -> Outbox {
    static BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let batch = BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
    store.add_tasks("j", 0, 7, &batch, tasks).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_parent_releases_each_dependent_once() {
    let acct = TestAccount::new("depexact").await;
    let store = dependency_job(&acct).await;
    let tasks = [
        task(json!({"id": "a", "commandLine": "x"})),
        task(json!({"id": "b", "commandLine": "x"})),
        task(json!({"id": "c", "commandLine": "x", "dependsOn": {"taskIds": ["a", "b"]}})),
    ];
    let runnable = add(&store, &tasks).await;
    assert_eq!(ids(&runnable), ["a", "b"], "c waits and is not published");
    store.clear_outbox(&runnable).await.unwrap();
    assert!(matches!(start(&store, "c", "n1").await, Start::Waiting));

    assert!(run(&store, "a", true).await.is_empty(), "c still waits on b");
    let released = run(&store, "b", true).await;
    assert_eq!(ids(&released), ["c"]);
    assert_eq!(released.messages()[0].priority, 7, "released messages carry the job priority");

    // b's message comes back before its outbox was cleared (its node died before the ack): the
    // redelivery publishes c again (harmless), but nothing is released a second time.
    assert!(matches!(start(&store, "b", "n2").await, Start::Done(r) if ids(&r) == ["c"]));
    store.clear_outbox(&released).await.unwrap();
    assert!(matches!(start(&store, "b", "n2").await, Start::Done(r) if r.is_empty()));
    assert!(run(&store, "c", true).await.is_empty());
    assert!(matches!(start(&store, "c", "n2").await, Start::Done(_)), "c ran once");
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.active, counts.completed, counts.succeeded), (0, 3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_in_and_chain_release_in_time_proportional_to_dependents() {
    let acct = TestAccount::new("depscale").await;
    let store = dependency_job(&acct).await;
    // 10,000 parents "0".."9999" and one merge task on all of them (a range).
    let parents: Vec<TaskAddParameter> =
        (0..10_000).map(|n| task(json!({"id": n.to_string(), "commandLine": "x"}))).collect();
    for chunk in parents.chunks(500) {
        assert_eq!(add(&store, chunk).await.messages().len(), chunk.len());
    }
    let merge =
        task(json!({"id": "merge", "commandLine": "x", "dependsOn": {"taskIdRanges": [{"start": 0, "end": 9999}]}}));
    assert!(add(&store, &[merge]).await.is_empty(), "the merge waits");
    let started = Instant::now();
    for n in 0..9_999 {
        assert!(run(&store, &n.to_string(), true).await.is_empty(), "merge released early, at parent {n}");
    }
    let last = Instant::now();
    assert_eq!(ids(&run(&store, "9999", true).await), ["merge"]);
    let released = last.elapsed();
    assert!(run(&store, "merge", true).await.is_empty());
    println!(
        "fan-in 10,000 -> 1 (store only): the last parent's completion released the merge in {:.2} ms; \
         10,000 start+complete round trips took {:.2} s",
        released.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64()
    );

    // A chain of 1,000: each completion releases exactly the next link.
    let chain: Vec<TaskAddParameter> = (0..1000)
        .map(|n| match n {
            0 => task(json!({"id": "c0", "commandLine": "x"})),
            n => task(
                json!({"id": format!("c{n}"), "commandLine": "x", "dependsOn": {"taskIds": [format!("c{}", n - 1)]}}),
            ),
        })
        .collect();
    assert_eq!(ids(&add(&store, &chain).await), ["c0"], "only the chain's head is runnable");
    for n in 0..999 {
        assert_eq!(ids(&run(&store, &format!("c{n}"), true).await), [format!("c{}", n + 1)]);
    }
    assert!(run(&store, "c999", true).await.is_empty());
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.active, counts.running, counts.completed), (0, 0, 11_001));
}

#[tokio::test(flavor = "multi_thread")]
async fn dependencies_run_end_to_end_with_dependency_actions() {
    let mut acct = TestAccount::new("depe2e").await;
    acct.pool("p", 4);
    let job = acct
        .file("job.json", &json!({"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": true}).to_string());
    acct.ok(&["job", "create", "--json-file", job.to_str().unwrap()]);
    // A sweep of 20 tasks and a merge on them; a failing task whose exit code 3 satisfies its
    // dependent; a failing task that blocks its dependent (the default).
    let shared = acct.work_dir.display().to_string();
    let mut tasks: Vec<serde_json::Value> = (1..=20)
        .map(|n| json!({"id": n.to_string(), "commandLine": format!("/bin/sh -c 'echo {n} > {shared}/n{n}'")}))
        .collect();
    tasks.push(json!({"id": "merge", "commandLine": format!("/bin/sh -c 'cat {shared}/n* | wc -l'"),
        "dependsOn": {"taskIdRanges": [{"start": 1, "end": 20}]}}));
    tasks.push(json!({"id": "soft", "commandLine": "/bin/sh -c 'exit 3'",
        "exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy", "jobAction": "none"}}]}}));
    tasks.push(json!({"id": "after-soft", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["soft"]}}));
    tasks.push(json!({"id": "hard", "commandLine": "/bin/false"}));
    tasks.push(json!({"id": "after-hard", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["hard"]}}));
    tasks.push(json!({"id": "orphan", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["ghost"]}}));
    let body: String = tasks.iter().map(|t| format!("{t}\n")).collect();
    let file = acct.file("tasks.jsonl", &body);
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);

    // The job cannot finish: `wait` says so instead of hanging.
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}\n{}", acct.worker_logs());
    assert!(
        wait.stderr.contains("cannot finish") && wait.stderr.contains("1 is blocked by failed parents"),
        "{}\n{}",
        wait.stderr,
        acct.worker_logs()
    );

    let merge = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "merge"]).json();
    assert_eq!(merge["executionInfo"]["result"], "success", "{merge}");
    assert_eq!(acct.task_file("j", "merge", "stdout.txt").trim(), "20", "the merge ran after all 20 parents");
    let after_soft = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "after-soft"]).json();
    assert_eq!(after_soft["state"], "completed", "exit 3 satisfies: {after_soft}");

    let shown = acct.ok(&["job", "show", "--job-id", "j"]).json();
    let deps = &shown["dependencies"];
    assert_eq!((deps["waiting"].as_u64(), deps["blocked"].as_u64()), (Some(1), Some(1)), "{shown}");
    let held: Vec<&serde_json::Value> = deps["tasks"].as_array().unwrap().iter().collect();
    assert!(held.iter().any(|t| t["taskId"] == "after-hard" && t["blockedBy"] == "hard"), "{deps}");
    assert!(held.iter().any(|t| t["taskId"] == "orphan" && t["missing"] == json!(["ghost"])), "{deps}");

    // The missing parent arrives: the orphan runs. Terminating the blocked task lets the job finish.
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "ghost", "--command-line", "/bin/true"]);
    acct.ok(&["task", "terminate", "--job-id", "j", "--task-id", "after-hard"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "two tasks failed (hard, and the terminated one): {wait:?}");
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"], json!({"active": 0, "running": 0, "completed": 27, "succeeded": 24, "failed": 3}));
    let orphan = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "orphan"]).json();
    assert_eq!(orphan["executionInfo"]["result"], "success");
    let terminated = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "after-hard"]).json();
    assert_eq!(terminated["executionInfo"]["failureInfo"]["code"], "TaskTerminated");
}

#[tokio::test(flavor = "multi_thread")]
async fn cycles_and_misuse_are_reported() {
    let mut acct = TestAccount::new("depcycle").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "plain", "--pool-id", "p"]);
    let one = acct
        .file("one.json", &json!({"id": "x", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["y"]}}).to_string());
    let refused = acct.drover(&["task", "create", "--job-id", "plain", "--json-file", one.to_str().unwrap()]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("usesTaskDependencies") && refused.stderr.contains("\"x\""), "{}", refused.stderr);

    let job = acct
        .file("job.json", &json!({"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": true}).to_string());
    acct.ok(&["job", "create", "--json-file", job.to_str().unwrap()]);
    let ring = [
        json!({"id": "a", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["b"]}}),
        json!({"id": "b", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["a"]}}),
    ];
    let file = acct.file("ring.json", &json!(ring).to_string());
    let refused = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("wait on each other: a -> b -> a"), "{}", refused.stderr);
    assert_eq!(acct.ok(&["job", "task-counts", "--job-id", "j"]).json()["taskCounts"]["active"], 0, "nothing added");

    // The same ring built over two submissions is not refusable up front: `job show` reports it.
    for t in &ring {
        let file = acct.file("t.json", &t.to_string());
        acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    }
    let shown = acct.ok(&["job", "show", "--job-id", "j"]).json();
    assert_eq!(shown["dependencies"]["cycles"], json!([["a", "b", "a"]]), "{shown}");
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "30"]);
    assert!(wait.code == 1 && wait.stderr.contains("cannot finish"), "{wait:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_thousand_task_fan_in_and_a_thousand_task_chain_run_on_workers() {
    let mut acct = TestAccount::new("depbig").await;
    acct.pool("p", 8);
    for job in ["fan", "chain"] {
        let spec = json!({"id": job, "poolInfo": {"poolId": "p"}, "usesTaskDependencies": true});
        let file = acct.file(&format!("{job}.json"), &spec.to_string());
        acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    }
    let mut fan: String =
        (0..10_000).map(|n| format!("{}\n", json!({"id": n.to_string(), "commandLine": "/bin/true"}))).collect();
    fan.push_str(
        &json!({"id": "merge", "commandLine": "/bin/true", "dependsOn": {"taskIdRanges": [{"start": 0, "end": 9999}]}})
            .to_string(),
    );
    let chain: String = (0..1000)
        .map(|n| match n {
            0 => format!("{}\n", json!({"id": "c0", "commandLine": "/bin/true"})),
            n => format!("{}\n", json!({"id": format!("c{n}"), "commandLine": "/bin/true", "dependsOn": {"taskIds": [format!("c{}", n - 1)]}})),
        })
        .collect();
    for (job, body) in [("fan", fan), ("chain", chain)] {
        let file = acct.file(&format!("{job}.jsonl"), &body);
        acct.ok(&["task", "create", "--job-id", job, "--json-file", file.to_str().unwrap()]);
    }
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    for job in ["fan", "chain"] {
        let wait = acct.drover(&["job", "wait", "--job-id", job, "--timeout", "300"]);
        assert_eq!(wait.code, 0, "{job}: {wait:?}");
    }
    // The merge started after its last parent ended (and how long after: the release time).
    let store = acct.store().await;
    let mut last_parent = 0i64;
    store
        .for_each_task("fan", None, |t| {
            if t.spec.id != "merge" {
                let end = t.execution_info.and_then(|i| i.end_time).unwrap();
                last_parent = last_parent.max(chrono::DateTime::parse_from_rfc3339(&end).unwrap().timestamp_millis());
            }
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    let merge = store.get_task("fan", "merge").await.unwrap();
    let start = merge.execution_info.and_then(|i| i.start_time).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(&start).unwrap().timestamp_millis();
    assert!(start >= last_parent, "the merge started before its last parent ended");
    let chain = store.task_counts("chain").await.unwrap().task_counts;
    assert_eq!((chain.completed, chain.succeeded), (1000, 1000));
    println!(
        "fan-in 10,000 -> 1 on 2 workers: the merge started {} ms after its last parent ended",
        start - last_parent
    );
}
