//! The CLI answers the user's next question: `job wait` says when nobody consumes the pool and
//! which tasks failed, `job show` says why a job does not progress, `task list -o table` shows
//! failure codes, `storage download` takes a key prefix, and help describes what it takes.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

fn create_job(acct: &TestAccount, spec: Value) {
    let file = acct.file(&format!("job-{}.json", spec["id"].as_str().unwrap()), &spec.to_string());
    acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
}

/// Waits until `job show` gives `notProgressing.reason` = `reason`; returns the job.
async fn not_progressing(acct: &TestAccount, job: &str, reason: &str) -> Value {
    let what = format!("job {job} notProgressing {reason}");
    acct.until_json(&["job", "show", "--job-id", job], &what, |j| j["notProgressing"]["reason"] == reason).await
}

#[tokio::test(flavor = "multi_thread")]
async fn job_wait_says_when_nobody_consumes_the_pool_and_keeps_waiting() {
    let mut acct = TestAccount::new("nonode").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "t", "--command-line", "/bin/true"]);

    // A timeout says that nobody consumes the pool.
    let timed_out = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "1"]);
    assert_eq!(timed_out.code, 1, "{timed_out:?}");
    let last = timed_out.stderr.lines().last().unwrap_or("");
    assert!(last.contains("timed out") && last.contains("nobody consumes pool p"), "{timed_out:?}");

    // Without a timeout, it says so at once and waits on; a worker that joins ends the wait.
    let mut wait = acct.drover_child(&["job", "wait", "--job-id", "j"]);
    let stderr = wait.stderr.take().unwrap();
    let (lines, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = said.recv_timeout(Duration::from_secs(20)).expect("job wait says something");
    assert!(first.contains("pool p has no live node") && first.contains("drover-worker --pool-id p"), "{first}");
    assert!(wait.try_wait().unwrap().is_none(), "job wait gave up: {first}");
    acct.start_worker("p", &[]);
    let status = tokio::task::spawn_blocking(move || wait.wait().unwrap()).await.unwrap();
    let rest: Vec<String> = said.iter().collect();
    assert!(status.success(), "{first}\n{rest:?}\n{}", acct.worker_logs());
    assert!(rest.iter().any(|l| l.starts_with("job j: 1 of 1 task completed (1 succeeded")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_wait_lists_failed_tasks_and_the_table_shows_failure_codes() {
    let mut acct = TestAccount::new("failedlist").await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let mut tasks: Vec<Value> =
        (0..12).map(|n| json!({"id": format!("f{n:02}"), "commandLine": "/bin/sh -c 'exit 3'"})).collect();
    tasks.push(json!({"id": "nofile", "commandLine": "/bin/true",
                      "resourceFiles": [{"httpUrl": acct.s3_url("missing.txt"), "filePath": "in.txt"}]}));
    tasks.push(json!({"id": "ok", "commandLine": "/bin/true"}));
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);

    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "120"]);
    assert_eq!(wait.code, 1, "{wait:?}\n{}", acct.worker_logs());
    let lines: Vec<&str> = wait.stderr.lines().collect();
    let at = lines.iter().position(|l| *l == "13 tasks failed:").unwrap_or_else(|| panic!("{wait:?}"));
    let listed: Vec<&str> =
        lines[at + 1..].iter().take_while(|l| l.starts_with("  ") && !l.contains("...")).copied().collect();
    assert_eq!(listed.len(), 10, "{wait:?}");
    for line in &listed {
        let by_exit = line.contains("FailureExitCode (exit code 3)");
        let by_input = line.contains("nofile: ResourceFileDownloadError: resourceFiles[0]");
        assert!(by_exit || by_input, "{line}");
    }
    assert!(lines.contains(&"  ... and 3 more"), "{wait:?}");
    assert!(lines.contains(&"all of them: drover task list --job-id j --state completed"), "{wait:?}");

    let table = acct.ok(&["task", "list", "--job-id", "j", "--state", "completed", "-o", "table"]).stdout;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id",
            "state",
            "executionInfo.exitCode",
            "executionInfo.result",
            "executionInfo.failureInfo.code",
            "executionInfo.retryCount",
            "nodeInfo.nodeId"
        ]
    );
    let row = |id: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{table}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    // Failed before it started: a failure code and no exit code.
    assert_eq!(row("nofile")[..4], ["nofile", "completed", "failure", "ResourceFileDownloadError"], "{table}");
    assert_eq!(row("f00")[..5], ["f00", "completed", "3", "failure", "FailureExitCode"], "{table}");
    assert_eq!(row("ok")[..4], ["ok", "completed", "0", "success"], "{table}");
    assert!(row("ok")[4].chars().all(|c| c.is_ascii_digit()), "success has no failure code: {table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_show_says_why_a_job_does_not_progress() {
    let mut acct = TestAccount::new("stall").await;
    acct.pool("idle", 1);
    acct.ok(&["job", "create", "--job-id", "nonode", "--pool-id", "idle"]);
    acct.ok(&["task", "create", "--job-id", "nonode", "--task-id", "t", "--command-line", "/bin/true"]);
    let shown = not_progressing(&acct, "nonode", "noLiveNode").await;
    let message = shown["notProgressing"]["message"].as_str().unwrap();
    assert!(
        message.contains("pool idle has no live node") && message.contains("drover-worker --pool-id idle"),
        "{shown}"
    );
    let table = acct.ok(&["job", "show", "--job-id", "nonode", "-o", "table"]).stdout;
    assert!(table.lines().any(|l| l.starts_with("notProgressing.reason") && l.ends_with("noLiveNode")), "{table}");

    // Every active task waits on a parent that is not coming.
    create_job(&acct, json!({"id": "held", "poolInfo": {"poolId": "idle"}, "usesTaskDependencies": true}));
    acct.add_tasks("held", &[json!({"id": "b", "commandLine": "/bin/true", "dependsOn": {"taskIds": ["ghost"]}})]);
    let shown = not_progressing(&acct, "held", "heldByDependencies").await;
    assert!(shown["notProgressing"]["message"].as_str().unwrap().contains("1 is waiting"), "{shown}");

    // Every node of the pool failed its start task.
    let pool = json!({"id": "broken", "startTask": {"commandLine": "/bin/sh -c 'exit 4'", "maxTaskRetryCount": 0}});
    let file = acct.file("broken.json", &pool.to_string());
    acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    acct.remember_pool("broken");
    acct.start_worker("broken", &[]);
    acct.ok(&["job", "create", "--job-id", "nostart", "--pool-id", "broken"]);
    acct.ok(&["task", "create", "--job-id", "nostart", "--task-id", "t", "--command-line", "/bin/true"]);
    let shown = not_progressing(&acct, "nostart", "startTaskFailed").await;
    assert!(
        shown["notProgressing"]["message"].as_str().unwrap().contains("drover node list --pool-id broken"),
        "{shown}"
    );

    // Tasks parked by maxParallelTasks while the first one runs (until the test lets it end).
    let go = acct.work_dir.join("go");
    let hold = format!("/bin/sh -c 'until [ -f {} ]; do sleep 0.05; done'", go.display());
    acct.pool("busy", 4);
    create_job(&acct, json!({"id": "capped", "poolInfo": {"poolId": "busy"}, "maxParallelTasks": 1}));
    let tasks: Vec<Value> = (0..3).map(|n| json!({"id": format!("t{n}"), "commandLine": hold})).collect();
    acct.add_tasks("capped", &tasks);
    acct.start_worker("busy", &[]);
    let shown = not_progressing(&acct, "capped", "maxParallelTasks").await;
    assert!(shown["notProgressing"]["message"].as_str().unwrap().contains("maxParallelTasks = 1"), "{shown}");
    std::fs::write(&go, "").unwrap();
    let wait = acct.drover(&["job", "wait", "--job-id", "capped", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    let shown = acct.ok(&["job", "show", "--job-id", "capped"]).json();
    assert!(shown.get("notProgressing").is_none(), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_download_takes_a_key_prefix() {
    let acct = TestAccount::new("prefix").await;
    acct.put("p/total.txt", "42\n").await;
    acct.put("p/totals/x.txt", "x\n").await;
    acct.put("p/other.txt", "no\n").await;
    let dir = acct.work_dir.join("r");
    let run = acct.ok(&["storage", "download", &acct.s3_url("p/total"), dir.to_str().unwrap()]);
    assert_eq!(run.json()["files"], 2, "{run:?}");
    assert_eq!(std::fs::read_to_string(dir.join("total.txt")).unwrap(), "42\n");
    assert_eq!(std::fs::read_to_string(dir.join("totals/x.txt")).unwrap(), "x\n");
    assert!(!dir.join("other.txt").exists());
    let none = acct.drover(&["storage", "download", &acct.s3_url("p/nothing"), dir.to_str().unwrap()]);
    assert_eq!(none.code, 1, "{none:?}");
    assert_eq!(none.stderr.lines().count(), 1, "{none:?}");
    assert!(none.stderr.contains("source") && none.stderr.contains("p/nothing"), "{none:?}");
}

#[test]
fn help_describes_without_leaking_the_environment() {
    let drover = drover_tests::bin_dir().join("drover");
    let help = |args: &[&str]| {
        let out = std::process::Command::new(&drover)
            .args(args)
            .env("DROVER_AMQP_URL", "amqp://user:s3cr3t-amqp@h:5672/%2f")
            .env("DROVER_REDIS_URL", "redis://:s3cr3t-redis@h:6379/0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for args in [&["--help"][..], &["job", "wait", "--help"], &["task", "create", "-h"]] {
        let text = help(args);
        assert!(!text.contains("s3cr3t"), "{args:?} prints a password:\n{text}");
        assert!(text.contains("Connection (flags or environment):"), "{text}");
    }
    assert!(help(&["job", "create", "--help"]).contains("section \"Sweeps, pipelines and job settings\""));
    assert!(help(&["pool", "create", "--help"]).contains("refused (\"already exists\")"));
    assert!(help(&["task", "create", "--help"]).contains("section \"Task files\""));
    let refused = std::process::Command::new(&drover).args(["job", "create", "--job-id", "j"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(help(&["completions", "bash"]).contains("drover"));
}
