//! One delivery, from message to ack: start an attempt, stage in, run, stage out, complete.
//!
//! The message is acked only after the outcome is recorded in Redis (and the outputs uploaded
//! before that). Every write names the attempt it belongs to, so if a newer attempt took the task
//! over, this one's outcome is refused and its message is simply dropped.

use super::process::{self, Exit, ProcessSpec};
use super::retention;
use super::{ack, dead_letter, publish_all, requeue, NodeContext};
use crate::model::task::{FailureInfo, JobAction, TaskResult};
use crate::model::{EnvironmentSetting, TaskAddParameter, TaskMessage};
use crate::status::{Completion, Outcome, Start, NODE_LEASE};
use crate::{Error, Result};
use lapin::message::Delivery;
use lapin::Channel;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an attempt ended on this node.
enum Run {
    Ended(Outcome),
    /// The node is leaving: the attempt was stopped and is handed back.
    HandedBack,
    /// A newer attempt owns the task.
    Stale,
}

pub(super) async fn handle(ctx: Arc<NodeContext>, publish: Channel, delivery: Delivery) {
    let msg = match TaskMessage::parse(&delivery.data) {
        Ok(m) => m,
        Err(e) => return reject(&ctx, &publish, &delivery, &e.to_string()).await,
    };
    let key = (msg.job_id.clone(), msg.task_id.clone());
    let root = task_dir(&ctx, &msg);
    let (attempt, spec, job_env, exit_actions, priority) = loop {
        let local = ctx.running.lock().map(|r| r.contains_key(&key)).unwrap_or(false);
        let start = if local {
            Ok(Start::Busy(ctx.options.node_id.clone()))
        } else {
            persist(&ctx, "start_task", || ctx.store.start_task(&msg, &ctx.options.node_id)).await
        };
        match start {
            Ok(Start::Started { attempt, spec, job_env, exit_actions, priority }) => {
                break (attempt, spec, job_env, exit_actions, priority)
            }
            Ok(Start::Poison(lost, released)) => {
                tracing::warn!(job = %msg.job_id, task = %msg.task_id, lost, "poison task: its node was lost every time; recorded as failed");
                return publish_outbox(&ctx, &publish, &delivery, &msg, &released).await;
            }
            // A redelivered message of a completed task: its completion may not have published
            // what it released (the node died between the two).
            Ok(Start::Done(released)) => return publish_outbox(&ctx, &publish, &delivery, &msg, &released).await,
            Ok(Start::Gone) | Ok(Start::Inactive(_)) | Ok(Start::Waiting) | Ok(Start::Parked) => {
                return ack(&delivery).await
            }
            Ok(Start::Busy(owner)) => {
                // A live node runs it (this is a duplicate or redelivered message): keep the
                // message until that attempt ends or its node is presumed dead.
                tracing::debug!(job = %msg.job_id, task = %msg.task_id, %owner, "task is running elsewhere; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(NODE_LEASE / 3) => continue,
                    _ = ctx.hand_back.cancelled() => return requeue(&delivery).await,
                }
            }
            Err(e) if e.is_transient() => return requeue(&delivery).await,
            Err(e) => return reject(&ctx, &publish, &delivery, &e.to_string()).await,
        }
    };
    tracing::debug!(job = %msg.job_id, task = %msg.task_id, attempt, "task started");
    let kill = ctx.hand_back.child_token();
    if let Ok(mut r) = ctx.running.lock() {
        r.insert(key.clone(), kill.clone());
    }
    let run = match super::job::prepared(&ctx, &msg.job_id).await {
        Ok(prep) => execute(&ctx, &msg, attempt, &spec, &job_env, prep.as_deref(), &root, &kill).await,
        Err(failure) => Run::Ended(failed(failure, None)),
    };
    let retention =
        spec.constraints.as_ref().and_then(|c| c.retention_time).map_or(retention::DEFAULT_RETENTION, |d| d.0);
    retention::mark(&root, retention).await;
    if let Ok(mut r) = ctx.running.lock() {
        r.remove(&key);
    }
    match run {
        Run::Stale => {
            tracing::warn!(job = %msg.job_id, task = %msg.task_id, attempt, "a newer attempt owns the task; this attempt's outcome was dropped");
            ack(&delivery).await
        }
        Run::HandedBack => {
            let released =
                persist(&ctx, "release_task", || ctx.store.release_task(&msg.job_id, &msg.task_id, attempt, priority))
                    .await;
            tracing::info!(job = %msg.job_id, task = %msg.task_id, released = released.is_ok(), "task handed back");
            if let Ok(Some(parked)) = released {
                if let Err(e) = publish_all(&ctx, &publish, &parked).await {
                    tracing::warn!(error = %e, "could not publish a parked task; it starts when another task ends");
                }
            }
            requeue(&delivery).await
        }
        Run::Ended(outcome) => {
            let code = outcome.failure.as_ref().map(|f| f.code.as_str());
            let blocks = spec.blocks_dependents(outcome.result == TaskResult::Success, outcome.exit_code, code);
            let done = persist(&ctx, "complete_task", || {
                ctx.store.complete_task(&msg.job_id, &msg.task_id, attempt, &outcome, blocks, priority)
            })
            .await;
            match done {
                Ok(Completion::Completed(released)) => {
                    tracing::debug!(job = %msg.job_id, task = %msg.task_id, attempt, exit_code = ?outcome.exit_code, result = ?outcome.result, "task completed");
                    if exit_actions && outcome.result == TaskResult::Failure {
                        apply_job_action(&ctx, &msg, &spec, &outcome).await;
                    }
                    publish_outbox(&ctx, &publish, &delivery, &msg, &released).await
                }
                Ok(Completion::Stale) => {
                    tracing::warn!(job = %msg.job_id, task = %msg.task_id, attempt, "a newer attempt owns the task; this outcome was dropped");
                    ack(&delivery).await
                }
                Ok(Completion::Retry(n, mut released)) => {
                    tracing::info!(job = %msg.job_id, task = %msg.task_id, retry = n, "task failed; retrying");
                    released.push(msg.clone().with_priority(priority));
                    // If this fails, the original message comes back; the task is active, so it
                    // simply runs again, and the outbox is published with it.
                    publish_outbox(&ctx, &publish, &delivery, &msg, &released).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the outcome; handing the message back");
                    requeue(&delivery).await
                }
            }
        }
    }
}

/// Publishes what a transition made runnable, clears the task's outbox, then acks. On failure
/// the message goes back, and its redelivery publishes the outbox again.
async fn publish_outbox(
    ctx: &NodeContext,
    publish: &Channel,
    delivery: &Delivery,
    msg: &TaskMessage,
    released: &[TaskMessage],
) {
    if released.is_empty() {
        return ack(delivery).await;
    }
    let published = match publish_all(ctx, publish, released).await {
        Ok(()) => persist(ctx, "clear_outbox", || ctx.store.clear_outbox(&msg.job_id, &msg.task_id)).await,
        Err(e) => Err(e),
    };
    match published {
        Ok(()) => {
            tracing::debug!(job = %msg.job_id, task = %msg.task_id, released = released.len(), "published released tasks");
            ack(delivery).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not publish released tasks; handing the message back");
            requeue(delivery).await
        }
    }
}

/// Applies a failed task's job action (its job's onTaskFailure is performExitOptionsJobAction).
async fn apply_job_action(ctx: &NodeContext, msg: &TaskMessage, spec: &TaskAddParameter, outcome: &Outcome) {
    let code = outcome.failure.as_ref().map(|f| f.code.as_str());
    if spec.job_action_on_failure(outcome.exit_code, code) == JobAction::Terminate {
        match persist(ctx, "terminate_job", || ctx.store.terminate_job(&msg.job_id, "TaskFailed")).await {
            Ok(_) => {
                tracing::info!(job = %msg.job_id, task = %msg.task_id, "task failed; job terminated by its exit options")
            }
            Err(e) => tracing::debug!(job = %msg.job_id, error = %e, "job not terminated (already ended?)"),
        }
    }
}

/// Dead-letters a message that cannot be run, with the reason.
async fn reject(ctx: &NodeContext, publish: &Channel, delivery: &Delivery, reason: &str) {
    tracing::warn!(reason, "dead-lettering a message that is not a runnable task");
    match dead_letter(ctx, publish, &delivery.data, reason).await {
        Ok(()) => ack(delivery).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not dead-letter; handing the message back");
            requeue(delivery).await
        }
    }
}

/// Runs a status write until it succeeds or fails for good; Redis outages are waited out (the
/// message stays unacked meanwhile) unless the node is handing its work back.
pub(super) async fn persist<T, F, Fut>(ctx: &NodeContext, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_transient() && !ctx.hand_back.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn task_dir(ctx: &NodeContext, msg: &TaskMessage) -> std::path::PathBuf {
    ctx.options.work_dir.join(&ctx.config.account).join("jobs").join(&msg.job_id).join(&msg.task_id)
}

fn failed(failure: FailureInfo, exit_code: Option<i32>) -> Outcome {
    Outcome::failed(failure, exit_code)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    ctx: &NodeContext,
    msg: &TaskMessage,
    attempt: u32,
    spec: &TaskAddParameter,
    job_env: &[EnvironmentSetting],
    prep_dir: Option<&Path>,
    task_dir: &Path,
    kill: &CancellationToken,
) -> Run {
    let wd = task_dir.join("wd");
    let (stdout, stderr) = match fresh_dir(task_dir, &wd).await {
        Ok(files) => files,
        Err(e) => {
            return Run::Ended(failed(
                FailureInfo::server("TaskDirectoryError", format!("{}: {e}", wd.display())),
                None,
            ))
        }
    };
    let mut package_env = Vec::new();
    let mut staged_in = 0;
    if msg.stage {
        for (i, rf) in spec.resource_files.iter().enumerate() {
            match ctx.staging.stage_in(rf, &wd).await {
                Ok(n) => staged_in += n,
                Err(e) => {
                    let failure = FailureInfo::user("ResourceFileDownloadError", format!("resourceFiles[{i}]: {e}"));
                    return Run::Ended(Outcome { staged_in, ..failed(failure, None) });
                }
            }
        }
        match super::packages::install(ctx, &spec.application_package_references).await {
            Ok(vars) => package_env = vars,
            Err(failure) => return Run::Ended(failed(failure, None)),
        }
        match persist(ctx, "run_task", || ctx.store.run_task(&msg.job_id, &msg.task_id, attempt)).await {
            Ok(true) => {}
            Ok(false) => return Run::Stale,
            Err(_) => return Run::HandedBack,
        }
    }
    let argv = match spec.argv() {
        Ok(a) if !a.is_empty() => a,
        _ => {
            return Run::Ended(failed(
                FailureInfo::user("CommandLineInvalid", "commandLine cannot be split into words"),
                None,
            ))
        }
    };
    let mut env = environment(
        ctx,
        Some(&msg.job_id),
        Some(&msg.task_id),
        job_env,
        &spec.environment_settings,
        task_dir,
        &wd,
        prep_dir,
    );
    env.extend(package_env);
    let process = ProcessSpec {
        argv: &argv,
        cwd: &wd,
        env: &env,
        stdout,
        stderr,
        wall_clock: spec.constraints.as_ref().and_then(|c| c.max_wall_clock_time).map(|d| d.0),
    };
    let mut outcome = match process::run(process, kill).await {
        Ok(Exit::Code(0)) => Outcome::success(),
        Ok(Exit::Code(code)) => {
            failed(FailureInfo::user("FailureExitCode", format!("the task exited with code {code}")), Some(code))
        }
        Ok(Exit::TimedOut) => failed(
            FailureInfo::user(
                "MaxWallClockTimeExceeded",
                "the task ran past constraints.maxWallClockTime and was killed",
            ),
            None,
        ),
        Ok(Exit::Killed) if ctx.hand_back.is_cancelled() => return Run::HandedBack,
        Ok(Exit::Killed) => {
            let why = "its job ended, or `drover task terminate` was run";
            Outcome { retryable: false, ..failed(crate::status::terminated_failure(why), None) }
        }
        Err(e) => failed(FailureInfo::user("CommandStartError", format!("cannot start {:?}: {e}", argv[0])), None),
    };
    let std_files = std_files_to_keep(task_dir).await;
    if !std_files.is_empty() || !spec.output_files.is_empty() {
        match persist(ctx, "owns", || ctx.store.owns(&msg.job_id, &msg.task_id, attempt)).await {
            Ok(true) => {}
            Ok(false) => return Run::Stale,
            Err(_) => return Run::HandedBack,
        }
    }
    let success = outcome.result == TaskResult::Success;
    match stage_out(ctx, msg, spec, task_dir, &wd, &std_files, success).await {
        Ok(n) => outcome.staged_out = n,
        Err(e) => outcome = failed(FailureInfo::user("FileUploadError", e.to_string()), outcome.exit_code),
    }
    outcome.staged_in = staged_in;
    Run::Ended(outcome)
}

/// A task's environment: the job's settings, then its own (which win), then the node's
/// variables under drover's and Azure's names. `task` is None for job preparation and release
/// tasks (and `job` too for the start task); `prep_wd` is the job preparation task's working
/// directory, when the job has one.
#[allow(clippy::too_many_arguments)]
pub(super) fn environment(
    ctx: &NodeContext,
    job: Option<&str>,
    task: Option<&str>,
    job_env: &[EnvironmentSetting],
    own: &[EnvironmentSetting],
    task_dir: &Path,
    wd: &Path,
    prep_wd: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in job_env.iter().chain(own) {
        env.retain(|(k, _)| *k != e.name);
        env.push((e.name.clone(), e.value.clone()));
    }
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let ours = [
        ("TASK_ID", task.map(str::to_string)),
        ("JOB_ID", job.map(str::to_string)),
        ("POOL_ID", Some(ctx.options.pool_id.clone())),
        ("NODE_ID", Some(ctx.options.node_id.clone())),
        ("TASK_WORKING_DIR", Some(path(wd))),
        ("TASK_DIR", Some(path(task_dir))),
        ("JOB_PREP_WORKING_DIR", prep_wd.map(path)),
    ];
    for (name, value) in ours {
        if let Some(value) = value {
            env.push((format!("DROVER_{name}"), value.clone()));
            env.push((format!("AZ_BATCH_{name}"), value));
        }
    }
    env
}

/// stdout.txt and stderr.txt unless empty: an empty file is not stored (a download of it
/// gives an empty file), which saves two uploads for the many tasks that print nothing.
async fn std_files_to_keep(task_dir: &Path) -> Vec<&'static str> {
    let task_dir = task_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        ["stdout.txt", "stderr.txt"]
            .into_iter()
            .filter(|name| std::fs::metadata(task_dir.join(name)).is_ok_and(|m| m.len() > 0))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// A fresh task directory for an attempt, with its stdout.txt and stderr.txt open for writing;
/// one trip to the blocking pool for all of the directory work (each tokio::fs call is one).
pub(super) async fn fresh_dir(task_dir: &Path, wd: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let (task_dir, wd) = (task_dir.to_path_buf(), wd.to_path_buf());
    tokio::task::spawn_blocking(move || prepare_dir(&task_dir, &wd))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

fn prepare_dir(task_dir: &Path, wd: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    match std::fs::remove_dir_all(task_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(wd)?;
    Ok((std::fs::File::create(task_dir.join("stdout.txt"))?, std::fs::File::create(task_dir.join("stderr.txt"))?))
}

/// Uploads the non-empty stdout.txt and stderr.txt and the output files whose condition holds.
async fn stage_out(
    ctx: &NodeContext,
    msg: &TaskMessage,
    spec: &TaskAddParameter,
    task_dir: &Path,
    wd: &Path,
    std_files: &[&str],
    success: bool,
) -> Result<u64> {
    let own = ctx.staging.task_files(&msg.job_id, &msg.task_id);
    let mut bytes = 0;
    for name in std_files {
        bytes += ctx.staging.upload(&task_dir.join(name), &own.bucket, &format!("{}/{name}", own.key)).await?;
    }
    for (i, output) in spec.output_files.iter().enumerate() {
        if !output.upload_options.upload_condition.applies(success) {
            continue;
        }
        let files = crate::staging::matching_files(output, wd, task_dir)
            .map_err(|e| Error::Storage(format!("outputFiles[{i}]: {e}")))?;
        for m in files {
            bytes += ctx
                .staging
                .upload(&m.file, &m.bucket, &m.key)
                .await
                .map_err(|e| Error::Storage(format!("outputFiles[{i}]: {e}")))?;
        }
    }
    Ok(bytes)
}
