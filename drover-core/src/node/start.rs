//! The pool's start task: runs when the node joins, before it takes any task when
//! `waitForSuccess` holds (the default); a node whose start task failed takes none.

use super::command::Command;
use super::job::runs_allowed;
use super::NodeContext;
use crate::model::node::{NodeState, StartTaskInformation};
use crate::model::pool::StartTask;
use tokio_util::sync::CancellationToken;

/// Runs the start task; returns whether the node may take tasks.
pub(super) async fn run(ctx: &std::sync::Arc<NodeContext>, task: &StartTask, shutdown: &CancellationToken) -> bool {
    if task.wait_for_success == Some(false) {
        let (ctx, task) = (ctx.clone(), task.clone());
        tokio::spawn(async move { run_to_end(&ctx, &task).await });
        return true;
    }
    ctx.set_state(NodeState::WaitingForStartTask).await;
    let succeeded = tokio::select! {
        ok = run_to_end(ctx, task) => ok,
        _ = shutdown.cancelled() => false,
    };
    if !succeeded && !shutdown.is_cancelled() {
        tracing::error!("the start task failed: this node takes no task");
        ctx.set_state(NodeState::StartTaskFailed).await;
    }
    succeeded
}

/// Runs the start task up to 1 + maxTaskRetryCount times, recording each run on the node.
async fn run_to_end(ctx: &NodeContext, task: &StartTask) -> bool {
    let command = Command {
        command_line: &task.command_line,
        resource_files: &task.resource_files,
        packages: &task.application_package_references,
        job_env: &[],
        own_env: &task.environment_settings,
        job: None,
        task: None,
        prep_wd: None,
        dir: ctx.startup_dir(),
        wall_clock: None,
        identity: task.user_identity.as_ref(),
        job_token: false,
    };
    let runs = runs_allowed(task.max_task_retry_count);
    let started = crate::model::rfc3339(crate::model::now_ms());
    for n in 0..runs {
        let running = StartTaskInformation {
            state: "running".into(),
            start_time: started.clone(),
            retry_count: n,
            ..Default::default()
        };
        record(ctx, &running).await;
        let ended = command.run(ctx, &CancellationToken::new()).await;
        let failure_info = ended.failure();
        let done = StartTaskInformation {
            state: "completed".into(),
            end_time: Some(crate::model::rfc3339(crate::model::now_ms())),
            exit_code: ended.exit_code(),
            result: Some(if failure_info.is_none() { "success" } else { "failure" }.into()),
            failure_info: failure_info.clone(),
            ..running
        };
        record(ctx, &done).await;
        if failure_info.is_none() {
            tracing::info!(runs = n + 1, "the start task succeeded");
            return true;
        }
        tracing::warn!(run = n + 1, of = runs, failure = ?failure_info, "the start task failed");
    }
    false
}

async fn record(ctx: &NodeContext, info: &StartTaskInformation) {
    if let Err(e) = ctx.store.record_start_task(&ctx.options.node_id, info).await {
        tracing::warn!(error = %e, "could not record the start task");
    }
}
