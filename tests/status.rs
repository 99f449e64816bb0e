//! The status store's transitions on real Redis: attempts are fenced and counters add up.

#![allow(clippy::unwrap_used)]

use drover_core::model::task::{FailureInfo, TaskResult};
use drover_core::model::{JobAddParameter, JobState, PoolAddParameter, TaskAddParameter, TaskMessage};
use drover_core::status::{Completion, Outcome, Start, StatusStore};
use drover_tests::TestAccount;

fn task(id: &str, retries: i32) -> TaskAddParameter {
    serde_json::from_value(
        serde_json::json!({"id": id, "commandLine": "/bin/true", "constraints": {"maxTaskRetryCount": retries}}),
    )
    .unwrap()
}

fn success() -> Outcome {
    Outcome::success()
}

/// Pool `p`, job `j` and its task `t` (with `retries`) in the account's store.
async fn job_with_one_task(acct: &TestAccount, retries: i32) -> StatusStore {
    let store = acct.store().await;
    store.create_pool(&PoolAddParameter::new("p", 1)).await.unwrap();
    store.create_job(&JobAddParameter::new("j", "p")).await.unwrap();
    store.add_tasks("j", 0, &[task("t", retries)]).await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_attempt_cannot_record_its_outcome() {
    let acct = TestAccount::new("fencing").await;
    let store = job_with_one_task(&acct, 0).await;

    let Start::Started { attempt: first, .. } =
        store.start_task(&TaskMessage::new("j", "t", false), "n1").await.unwrap()
    else {
        panic!("first start")
    };
    // n1 holds no heartbeat (it died): another node takes the task over.
    let Start::Started { attempt: second, .. } =
        store.start_task(&TaskMessage::new("j", "t", false), "n2").await.unwrap()
    else {
        panic!("takeover")
    };
    assert!(second > first);
    // While n2 is alive, a duplicate message finds the task busy.
    store.heartbeat("n2").await.unwrap();
    assert!(
        matches!(store.start_task(&TaskMessage::new("j", "t", false), "n3").await.unwrap(), Start::Busy(n) if n == "n2")
    );

    assert_eq!(store.complete_task("j", "t", first, &success(), false, 0).await.unwrap(), Completion::Stale);
    assert_eq!(
        store.complete_task("j", "t", second, &success(), false, 0).await.unwrap(),
        Completion::Completed(vec![])
    );
    assert_eq!(
        store.complete_task("j", "t", second, &success(), false, 0).await.unwrap(),
        Completion::Stale,
        "recorded once"
    );
    assert!(matches!(store.start_task(&TaskMessage::new("j", "t", false), "n3").await.unwrap(), Start::Done(_)));

    let record = store.task_record("j", "t").await.unwrap();
    assert_eq!(record.requeue, 1, "the takeover counts as a requeue");
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.active, counts.running, counts.completed, counts.succeeded), (0, 0, 1, 1));
    store.node_gone("n2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_with_retries_left_goes_back_to_active() {
    let acct = TestAccount::new("retry").await;
    let store = job_with_one_task(&acct, 1).await;
    let failure = Outcome::failed(FailureInfo::user("FailureExitCode", "exit 1"), Some(1));
    let Start::Started { attempt, .. } = store.start_task(&TaskMessage::new("j", "t", false), "n1").await.unwrap()
    else {
        panic!()
    };
    assert_eq!(store.complete_task("j", "t", attempt, &failure, false, 0).await.unwrap(), Completion::Retry(1, vec![]));
    assert_eq!(store.task_counts("j").await.unwrap().task_counts.active, 1);
    let Start::Started { attempt, .. } = store.start_task(&TaskMessage::new("j", "t", false), "n1").await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        store.complete_task("j", "t", attempt, &failure, false, 0).await.unwrap(),
        Completion::Completed(vec![])
    );
    let task = store.get_task("j", "t").await.unwrap();
    let info = task.execution_info.unwrap();
    assert_eq!((info.retry_count, info.exit_code, info.result), (1, Some(1), Some(TaskResult::Failure)));
    let counts = store.task_counts("j").await.unwrap().task_counts;
    assert_eq!((counts.completed, counts.failed), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_job_whose_node_was_lost_still_completes() {
    let acct = TestAccount::new("lostterm").await;
    let store = job_with_one_task(&acct, 0).await;
    let Start::Started { .. } = store.start_task(&TaskMessage::new("j", "t", false), "n1").await.unwrap() else {
        panic!()
    };
    // n1 dies (it never heartbeats) while the job is terminated: nobody is left to kill the task.
    assert_eq!(store.terminate_job("j", "UserTerminate").await.unwrap(), JobState::Terminating);
    // Its message comes back to another node, which records the task and so ends the job.
    assert!(matches!(store.start_task(&TaskMessage::new("j", "t", false), "n2").await.unwrap(), Start::Inactive(_)));
    let task = store.get_task("j", "t").await.unwrap();
    assert_eq!(task.execution_info.unwrap().failure_info.unwrap().code, "TaskTerminated");
    assert_eq!(store.get_job("j").await.unwrap().state, JobState::Completed);
}
