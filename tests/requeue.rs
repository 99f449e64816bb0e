//! Putting back what should run again: `drover job requeue` for tasks whose messages were lost,
//! `drover dead-letter replay` for task messages in the dead-letter queue. Both are safe to
//! repeat: every task runs once.

#![allow(clippy::unwrap_used)]

use drover_core::queue::Topology;
use drover_tests::TestAccount;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use serde_json::json;

/// An account with job `j` on pool `p` and `n` tasks in it, each logging its execution to the
/// returned ledger, whose messages are lost (purged from the queue, as a lost broker node or an
/// operator's purge would leave them). No worker runs yet.
async fn tasks_with_lost_messages(test: &str, n: usize) -> (TestAccount, std::path::PathBuf) {
    let mut acct = TestAccount::new(test).await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let tasks: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("t{i:02}"), "commandLine": format!("/bin/sh -c 'echo $DROVER_TASK_ID >> {}'", ledger.display())}))
        .collect();
    acct.add_tasks("j", &tasks);
    let queue = Topology::new(acct.name()).pool_queue("p");
    let purged = acct.channel().await.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()).await.unwrap();
    assert_eq!(purged as usize, n);
    (acct, ledger)
}

/// How many times each task ran, by the ledger.
fn runs(ledger: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut runs = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(ledger).unwrap_or_default().lines() {
        *runs.entry(line.to_string()).or_default() += 1;
    }
    runs
}

#[tokio::test(flavor = "multi_thread")]
async fn job_requeue_puts_back_lost_messages_and_each_task_runs_once() {
    let (mut acct, ledger) = tasks_with_lost_messages("requeue", 20).await;

    // Twice: the second leaves two messages per task in the queue.
    for _ in 0..2 {
        let requeued = acct.ok(&["job", "requeue", "--job-id", "j"]).json();
        assert_eq!(requeued, json!({"jobId": "j", "requeued": 20}));
    }
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let runs = runs(&ledger);
    assert_eq!(runs.len(), 20, "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "a task ran twice: {runs:?}");
    // Nothing active is left to put back.
    assert_eq!(acct.ok(&["job", "requeue", "--job-id", "j"]).json()["requeued"], 0);

    let missing = acct.drover(&["job", "requeue", "--job-id", "nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("job \"nope\" does not exist"), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_replay_runs_dead_task_messages_once_and_keeps_the_rest() {
    let (mut acct, ledger) = tasks_with_lost_messages("replay", 2).await;

    // In the dead-letter queue: t00's message (as the broker's delivery limit would leave it),
    // one of a job that is gone, and one that is not a task.
    assert_eq!(acct.ok(&["dead-letter", "list"]).json(), json!([])); // and its queue is declared
    let ch = acct.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let dead = Topology::new(acct.name()).dead_letters();
    for body in [r#"{"v":1,"jobId":"j","taskId":"t00"}"#, r#"{"v":1,"jobId":"gone","taskId":"x"}"#, "not a task"] {
        let confirm = ch
            .basic_publish(
                dead.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    let replay = acct.ok(&["dead-letter", "replay"]).json();
    assert_eq!(replay, json!({"replayed": 1, "removed": 1, "kept": 1}));
    acct.start_worker("p", &[]);
    let counts = acct
        .until_json(&["job", "task-counts", "--job-id", "j"], "t00 completed", |c| c["taskCounts"]["completed"] == 1)
        .await;
    assert_eq!(counts["taskCounts"]["active"], 1, "t01's message is still lost: {counts}");
    assert_eq!(runs(&ledger).into_iter().collect::<Vec<_>>(), vec![("t00".to_string(), 1)]);

    let listed = acct.ok(&["dead-letter", "list"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["body"], "not a task");
    let again = acct.ok(&["dead-letter", "replay"]).json();
    assert_eq!(again, json!({"replayed": 0, "removed": 0, "kept": 1}));
}
