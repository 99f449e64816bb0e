//! The pool's start task: runs when the node joins, before it takes any task when
//! `waitForSuccess` holds (the default); a node whose start task failed takes none.

use super::job::{run_one, runs_allowed};
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
    let dir = ctx.options.work_dir.join(&ctx.config.account).join("startup");
    let wd = dir.join("wd");
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
        let env = super::attempt::environment(ctx, None, None, &[], &task.environment_settings, &dir, &wd, None);
        let packages = match super::packages::install(ctx, &task.application_package_references).await {
            Ok(p) => p,
            Err(failure) => {
                let failed =
                    StartTaskInformation { failure_info: Some(failure), result: Some("failure".into()), ..running };
                record(ctx, &StartTaskInformation { state: "completed".into(), ..failed }).await;
                continue;
            }
        };
        let env: Vec<(String, String)> = env.into_iter().chain(packages).collect();
        let info = run_one(ctx, &task.command_line, &task.resource_files, &env, &dir, &wd, None).await;
        let done = StartTaskInformation {
            state: "completed".into(),
            start_time: started.clone(),
            end_time: Some(info.end_time.clone()),
            exit_code: info.exit_code,
            failure_info: info.failure_info.clone(),
            retry_count: n,
            result: Some(info.result.to_string()),
        };
        record(ctx, &done).await;
        if info.failure_info.is_none() {
            tracing::info!(runs = n + 1, "the start task succeeded");
            return true;
        }
        tracing::warn!(run = n + 1, of = runs, failure = ?info.failure_info, "the start task failed");
    }
    false
}

async fn record(ctx: &NodeContext, info: &StartTaskInformation) {
    if let Err(e) = ctx.store.record_start_task(&ctx.options.node_id, info).await {
        tracing::warn!(error = %e, "could not record the start task");
    }
}
