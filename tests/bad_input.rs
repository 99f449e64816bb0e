//! Bad input gets a clear one-line error naming the field or id at fault, and changes nothing.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::time::Duration;

/// The CLI refused with exit 1 and one stderr line containing every one of `words`.
fn refused(run: &drover_tests::Run, words: &[&str]) {
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    for w in words {
        assert!(lines[0].contains(w), "{w:?} missing from {:?}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_task_files_add_nothing() {
    let mut acct = TestAccount::new("badfiles").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "existing", "--command-line", "/bin/true"]);
    let good = r#"{"id":"good","commandLine":"/bin/true"}"#;
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("malformed", format!("{good}\n{{\"id\": \"x\", \"commandLine\" \"y\"}}\n"), vec!["line 2 column"]),
        ("unknown-field", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"multiInstanceSettings\":{{}}}}\n"), vec!["task #2: line 2 column 29: multiInstanceSettings", "drover does not provide"]),
        ("wrong-type", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"requiredSlots\":\"two\"}}\n"), vec!["invalid type", "line 2"]),
        ("no-command", format!("{good}\n{{\"id\":\"x\"}}\n"), vec!["missing field `commandLine`"]),
        ("long-id", format!("{good}\n{{\"id\":\"{}\",\"commandLine\":\"y\"}}\n", "a".repeat(65)), vec!["task id", "longer than 64"]),
        ("bad-char", format!("{good}\n{{\"id\":\"a/b\",\"commandLine\":\"y\"}}\n"), vec!["task #2 (line 2): task id", "'/'"]),
        ("dup-in-file", format!("{good}\n{good}\n"), vec!["\"good\"", "more than once"]),
        ("dup-in-job", format!("{good}\n{{\"id\":\"existing\",\"commandLine\":\"y\"}}\n"), vec!["\"existing\"", "already exists"]),
        ("escape", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"resourceFiles\":[{{\"httpUrl\":\"s3://b-b/k\",\"filePath\":\"../x\"}}]}}\n"), vec!["task \"x\"", "resourceFiles[0].filePath", "escapes"]),
        ("absolute", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"resourceFiles\":[{{\"httpUrl\":\"s3://b-b/k\",\"filePath\":\"/etc/passwd\"}}]}}\n"), vec!["resourceFiles[0].filePath", "relative"]),
        ("setuid", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"resourceFiles\":[{{\"httpUrl\":\"s3://b-b/k\",\"filePath\":\"k\",\"fileMode\":\"4755\"}}]}}\n"), vec!["task \"x\"", "resourceFiles[0]", "fileMode \"4755\"", "setuid"]),
        ("dotdot-path", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"outputFiles\":[{{\"filePattern\":\"o\",\"destination\":{{\"container\":{{\"containerUrl\":\"s3://b-b/out\",\"path\":\"a/../../other/o\"}}}},\"uploadOptions\":{{\"uploadCondition\":\"taskSuccess\"}}}}]}}\n"), vec!["outputFiles[0]", "destination.container.path", "\"..\" path segment"]),
        ("empty-segment", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"outputFiles\":[{{\"filePattern\":\"o\",\"destination\":{{\"container\":{{\"containerUrl\":\"s3://b-b/out//x\"}}}},\"uploadOptions\":{{\"uploadCondition\":\"taskSuccess\"}}}}]}}\n"), vec!["outputFiles[0]", "containerUrl", "empty path segment"]),
        ("long-command", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"echo {}\"}}\n", "a".repeat(40_000)), vec!["task \"x\"", "commandLine", "more than 32768"]),
        ("huge-task", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"environmentSettings\":[{}]}}\n", (0..40).map(|i| format!("{{\"name\":\"V{i}\",\"value\":\"{}\"}}", "v".repeat(30_000))).collect::<Vec<_>>().join(",")), vec!["task \"x\"", "bytes of JSON, more than the 1048576"]),
        ("bad-duration", format!("{good}\n{{\"id\":\"x\",\"commandLine\":\"y\",\"constraints\":{{\"maxWallClockTime\":\"10 minutes\"}}}}\n"), vec!["ISO 8601"]),
    ];
    for (name, content, words) in cases {
        let file = acct.file(&format!("{name}.jsonl"), &content);
        let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
        refused(&run, &words);
    }
    // Nothing but the one task added at the start exists, and nothing was queued.
    let listed = acct.ok(&["task", "list", "--job-id", "j"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["active"], 1);
    let ch = acct.channel().await;
    let q = ch
        .queue_declare(
            drover_core::queue::Topology::new(acct.name()).pool_queue("p").into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 1);

    // --continue-on-error adds the good ones and reports the bad.
    let file = acct.file("mixed.jsonl", &format!("{good}\n{{\"id\":\"x\"}}\n"));
    let run =
        acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap(), "--continue-on-error"]);
    assert_eq!(run.json()["added"], 1);
    assert!(run.stderr.contains("commandLine"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_are_named() {
    let mut acct = TestAccount::new("unknown").await;
    refused(
        &acct.drover(&["job", "create", "--job-id", "j", "--pool-id", "nopool"]),
        &["pool \"nopool\" does not exist"],
    );
    acct.pool("p", 1);
    refused(
        &acct.drover(&["task", "create", "--job-id", "nojob", "--task-id", "t", "--command-line", "x"]),
        &["job \"nojob\""],
    );
    refused(&acct.drover(&["job", "show", "--job-id", "nojob"]), &["job \"nojob\" does not exist"]);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    refused(&acct.drover(&["job", "create", "--job-id", "j", "--pool-id", "p"]), &["job \"j\" already exists"]);
    refused(&acct.drover(&["task", "show", "--job-id", "j", "--task-id", "nope"]), &["task \"nope\" does not exist"]);
    refused(&acct.drover(&["task", "list", "--job-id", "j", "--state", "sleeping"]), &["state \"sleeping\""]);
    refused(&acct.drover(&["pool", "create", "--pool-id", "bad.pool"]), &["pool id", "'.'"]);
    refused(&acct.drover(&["job", "create", "--job-id", "x", "--pool-id", "p", "--account", "no/slash"]), &["account"]);
    let usage = acct.drover(&["task", "create"]);
    assert_eq!(usage.code, 2, "usage errors exit 2: {usage:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_is_not_a_task_is_dead_lettered_with_its_reason() {
    let mut acct = TestAccount::new("poison").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let topology = drover_core::queue::Topology::new(acct.name());
    let ch = acct.channel().await;
    let mut dead = ch
        .basic_consume(
            topology.dead_letters().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_publish(
        topology.tasks_exchange().into(),
        "p".into(),
        BasicPublishOptions::default(),
        b"this is not json",
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap();
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "after", "--command-line", "/bin/true"]);
    acct.start_worker("p", &[]);

    let letter = drover_tests::within(Duration::from_secs(30), "a dead letter", dead.next()).await.unwrap().unwrap();
    assert_eq!(letter.data, b"this is not json");
    let headers = letter.properties.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get(drover_core::queue::REASON_HEADER) {
        Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("not a task message"), "{reason}");
    // `drover dead-letter list` shows it, with the reason, and leaves it in the queue.
    // Closing the consuming channel returns every message it holds to the queue.
    ch.close(200, "done".into()).await.unwrap();
    drop(letter);
    let listed = acct.ok(&["dead-letter", "list"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["body"], "this is not json");
    assert_eq!(listed[0]["poolId"], "p");
    assert!(listed[0]["reason"].as_str().unwrap().contains("not a task message"), "{listed}");
    assert_eq!(acct.ok(&["dead-letter", "list"]).json().as_array().unwrap().len(), 1, "listing keeps them");

    // The worker carried on.
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "30"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_refuses_a_node_id_that_cannot_name_its_directories() {
    let mut acct = TestAccount::new("nodeid").await;
    acct.pool("p", 1);
    for bad in ["../x", ".x", "a/b"] {
        let mut cmd = std::process::Command::new(drover_tests::bin_dir().join("drover-worker"));
        acct.env(&mut cmd);
        let work = acct.work_dir.join("nodes");
        let out = cmd.args(["--pool-id", "p", "--node-id", bad, "--work-dir"]).arg(&work).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&format!("node id {bad:?}")), "{bad}: {stderr}");
        assert!(!work.join(acct.name()).exists(), "{bad}: nothing was made");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls_stay_hidden_in_refusals_records_and_logs() {
    let mut acct = TestAccount::new("signedurl").await;
    // (A SAS is stored sealed with the account's keys; without them it is refused.)
    acct.sign_with("k 0123456789abcdef0123456789abcdef\n");
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    // An Azure SAS URL where an s3:// container belongs is refused without its signature.
    let sas = "https://a.blob.core.windows.net/c?sv=1&sig=SECRETSIG123";
    let file = acct.file(
        "sas.jsonl",
        &format!("{}\n", json!({"id": "x", "commandLine": "y", "resourceFiles": [{"storageContainerUrl": sas}]})),
    );
    let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    refused(&run, &["storageContainerUrl", "sig=***"]);
    assert!(!run.stderr.contains("SECRETSIG123"), "{run:?}");

    // A failing httpUrl with a password, and an '@' in its query before the signature, keeps
    // both out of the task's record and the worker's log.
    let url = "http://u:SECRETPW456@127.0.0.1:1/x?to=a@b.com&sv=1&sig=SECRETSIG123";
    acct.add_tasks(
        "j",
        &[json!({"id": "t", "commandLine": "/bin/true", "resourceFiles": [{"httpUrl": url, "filePath": "x"}]})],
    );
    acct.start_worker("p", &["--storage-retry-seconds", "2"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let task = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "t"]).json();
    let message = task["executionInfo"]["failureInfo"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("127.0.0.1:1/x?to=a@b.com&sv=1&sig=***"), "{task}");
    let logs = acct.worker_logs();
    for secret in ["SECRETSIG123", "SECRETPW456"] {
        assert!(!message.contains(secret), "{task}");
        assert!(!logs.contains(secret), "{logs}");
    }
}
