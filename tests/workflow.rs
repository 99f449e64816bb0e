//! The Batch workflow end to end on real RabbitMQ, Redis and S3: resource files in, output files
//! out, failures recorded, many tasks over several workers each completed once.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use serde_json::json;

fn jsonl(tasks: &[serde_json::Value]) -> String {
    tasks.iter().map(|t| format!("{t}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_workflow_with_resource_and_output_files() {
    let mut acct = TestAccount::new("workflow").await;
    acct.put("data/a.txt", "alpha\n").await;
    acct.put("data/sub/b.txt", "beta\n").await;
    acct.put("app/run.sh", "#!/bin/sh\ncat \"$@\" | tr a-z A-Z > result.txt\nmkdir -p logs && echo \"$DROVER_TASK_ID $AZ_BATCH_JOB_ID\" > logs/ids.txt\n").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let out = acct.s3_url("out");
    let task = json!({
        "id": "t1",
        "commandLine": "/bin/sh app/run.sh in/a.txt dir/sub/b.txt",
        "resourceFiles": [
            {"httpUrl": acct.s3_url("app/run.sh"), "filePath": "app/run.sh", "fileMode": "0755"},
            {"httpUrl": acct.s3_url("data/a.txt"), "filePath": "in/a.txt"},
            {"storageContainerUrl": acct.s3_url("data"), "filePath": "dir", "blobPrefix": "sub/"},
        ],
        "outputFiles": [
            {"filePattern": "result.txt", "destination": {"container": {"containerUrl": out, "path": "r/result.txt"}},
             "uploadOptions": {"uploadCondition": "taskSuccess"}},
            {"filePattern": "logs/*.txt", "destination": {"container": {"containerUrl": out}}},
            {"filePattern": "../std*.txt", "destination": {"container": {"containerUrl": out, "path": "std"}},
             "uploadOptions": {"uploadCondition": "taskFailure"}},
        ],
    });
    let file = acct.file("tasks.json", &task.to_string());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());

    assert_eq!(acct.get("out/r/result.txt").await.as_deref(), Some("ALPHA\nBETA\n"));
    assert_eq!(acct.get("out/ids.txt").await.as_deref(), Some("t1 j\n"));
    assert_eq!(acct.get("out/std/stdout.txt").await, None, "taskFailure outputs of a successful task");

    let shown = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "t1"]).json();
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["executionInfo"]["exitCode"], 0);
    assert_eq!(shown["executionInfo"]["result"], "success");
    assert_eq!(shown["nodeInfo"]["poolId"], "p");
    let root = shown["nodeInfo"]["taskRootDirectory"].as_str().unwrap();
    assert!(root.ends_with(&format!("{}/jobs/j/t1", acct.name())), "{root}");
    assert!(std::path::Path::new(root).join("wd/result.txt").is_file());

    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"], json!({"active": 0, "running": 0, "completed": 1, "succeeded": 1, "failed": 0}));

    // stdout.txt is kept for every task and can be downloaded.
    assert_eq!(acct.task_file("j", "t1", "stderr.txt"), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_is_recorded_and_fails_the_wait() {
    let mut acct = TestAccount::new("failing").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let out = acct.s3_url("out");
    let tasks = [
        json!({"id": "bad", "commandLine": "/bin/sh -c 'echo oops; echo partial > part.txt; exit 3'",
               "outputFiles": [
                   {"filePattern": "*.txt", "destination": {"container": {"containerUrl": out, "path": "fail"}},
                    "uploadOptions": {"uploadCondition": "taskFailure"}},
                   {"filePattern": "*.txt", "destination": {"container": {"containerUrl": out, "path": "ok"}},
                    "uploadOptions": {"uploadCondition": "taskSuccess"}}]}),
        json!({"id": "missing-program", "commandLine": "/no/such/program"}),
        json!({"id": "good", "commandLine": "/bin/true"}),
    ];
    let file = acct.file("tasks.jsonl", &jsonl(&tasks));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    assert!(wait.stderr.contains("3 of 3 tasks completed (1 succeeded, 2 failed)"), "{wait:?}");

    let bad = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "bad"]).json();
    assert_eq!(bad["executionInfo"]["exitCode"], 3);
    assert_eq!(bad["executionInfo"]["result"], "failure");
    assert_eq!(bad["executionInfo"]["failureInfo"]["code"], "FailureExitCode");
    assert_eq!(acct.get("out/fail/part.txt").await.as_deref(), Some("partial\n"));
    assert_eq!(acct.get("out/ok/part.txt").await, None);
    assert_eq!(acct.get("jobs/j/bad/stdout.txt").await.as_deref(), Some("oops\n"));

    let missing = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "missing-program"]).json();
    assert_eq!(missing["executionInfo"]["failureInfo"]["category"], "userError");
    assert_eq!(missing["executionInfo"]["failureInfo"]["code"], "CommandStartError");

    let failed = acct.ok(&["task", "list", "--job-id", "j", "--state", "completed"]).json();
    assert_eq!(failed.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_resource_fails_the_task_and_the_worker_carries_on() {
    let mut acct = TestAccount::new("unreachable").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks = [
        json!({"id": "nohost", "commandLine": "/bin/true",
               "resourceFiles": [{"httpUrl": "http://127.0.0.1:9/nothing-listens-here", "filePath": "x"}]}),
        json!({"id": "nokey", "commandLine": "/bin/true",
               "resourceFiles": [{"httpUrl": acct.s3_url("no/such/key"), "filePath": "y"}]}),
        json!({"id": "after", "commandLine": "/bin/true"}),
    ];
    let file = acct.file("tasks.jsonl", &jsonl(&tasks));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    // Storage that cannot be reached is retried for the budget, then the task fails.
    acct.start_worker("p", &["--storage-retry-seconds", "1"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    for id in ["nohost", "nokey"] {
        let t = acct.ok(&["task", "show", "--job-id", "j", "--task-id", id]).json();
        let failure = &t["executionInfo"]["failureInfo"];
        assert_eq!(failure["category"], "userError", "{t}");
        assert_eq!(failure["code"], "ResourceFileDownloadError", "{t}");
        assert!(failure["message"].as_str().unwrap().contains("resourceFiles[0]"), "{t}");
    }
    let after = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "after"]).json();
    assert_eq!(after["executionInfo"]["result"], "success");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_tasks_on_two_workers_each_complete_once() {
    let mut acct = TestAccount::new("thousand").await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            json!({"id": format!("t{i:04}"),
                   "commandLine": format!("/bin/sh -c 'echo $DROVER_TASK_ID $DROVER_NODE_ID >> {}'", ledger.display())})
        })
        .collect();
    let file = acct.file("tasks.jsonl", &jsonl(&tasks));
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    let added = acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]).json();
    assert_eq!(added["added"], 1000);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "240"]);
    assert_eq!(wait.code, 0, "{wait:?}");

    let ledger = std::fs::read_to_string(&ledger).unwrap();
    let mut runs: std::collections::HashMap<&str, usize> = Default::default();
    let mut nodes: std::collections::HashSet<&str> = Default::default();
    for line in ledger.lines() {
        let (task, node) = line.split_once(' ').unwrap();
        *runs.entry(task).or_default() += 1;
        nodes.insert(node);
    }
    assert_eq!(runs.len(), 1000, "every task ran");
    assert!(
        runs.values().all(|n| *n == 1),
        "a task ran twice: {:?}",
        runs.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(nodes.len(), 2, "both workers took tasks");
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(
        counts["taskCounts"],
        json!({"active": 0, "running": 0, "completed": 1000, "succeeded": 1000, "failed": 0})
    );
    let listed = acct.ok(&["task", "list", "--job-id", "j"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().all(|t| t["executionInfo"]["retryCount"] == 0 && t["state"] == "completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wall_clock_limit_kills_the_process_group_and_counts_as_a_retryable_failure() {
    let mut acct = TestAccount::new("wallclock").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let task = json!({"id": "slow", "commandLine": "/bin/sh -c 'sleep 60 & echo $! > bg.pid; sleep 60'",
                      "constraints": {"maxWallClockTime": "PT1S", "maxTaskRetryCount": 1}});
    let file = acct.file("task.json", &task.to_string());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "30"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let t = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "slow"]).json();
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "MaxWallClockTimeExceeded", "{t}");
    assert_eq!(t["executionInfo"]["retryCount"], 1, "retried once: {t}");
    let stats = acct.ok(&["job", "show", "--job-id", "j"]).json()["stats"].clone();
    assert_eq!((&stats["numTaskRetries"], &stats["numFailedTasks"]), (&json!("1"), &json!("1")), "{stats}");
    let wall = stats["wallClockTime"].as_str().unwrap();
    assert!(wall.starts_with("PT1.") || wall.starts_with("PT2"), "one attempt's second counted: {stats}");
    // The background child of the second attempt went with its process group.
    let root = t["nodeInfo"]["taskRootDirectory"].as_str().unwrap();
    let pid = std::fs::read_to_string(format!("{root}/wd/bg.pid")).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the background process still runs: {stat}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_conditions_decide_whether_a_failure_terminates_the_job() {
    let mut acct = TestAccount::new("exitcond").await;
    acct.pool("p", 1);
    let job = json!({"id": "j", "poolInfo": {"poolId": "p"}, "onTaskFailure": "performExitOptionsJobAction"});
    let job_file = acct.file("job.json", &job.to_string());
    acct.ok(&["job", "create", "--json-file", job_file.to_str().unwrap()]);
    let tasks = [
        json!({"id": "tolerated", "commandLine": "/bin/sh -c 'exit 3'",
               "exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": "none"}}]}}),
        json!({"id": "fatal", "commandLine": "/bin/sh -c 'exit 4'",
               "exitConditions": {"exitCodeRanges": [{"start": 1, "end": 2, "exitOptions": {"jobAction": "none"}}]}}),
        json!({"id": "never", "commandLine": "/bin/true"}),
    ];
    let file = acct.file("tasks.jsonl", &jsonl(&tasks));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    // `disable` is refused up front.
    let bad =
        acct.file("bad.json", r#"{"id":"d","commandLine":"x","exitConditions":{"default":{"jobAction":"disable"}}}"#);
    let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", bad.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("jobAction disable"), "{run:?}");
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "30"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let job = acct.ok(&["job", "show", "--job-id", "j"]).json();
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["executionInfo"]["terminateReason"], "TaskFailed", "{job}");
    let tolerated = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "tolerated"]).json();
    assert_eq!(tolerated["executionInfo"]["exitCode"], 3);
    let never = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "never"]).json();
    assert_eq!(never["state"], "active", "a task of a terminated job never starts: {never}");
}
