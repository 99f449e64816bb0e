//! One delivery, from message to ack, as named steps over an [`Attempt`]: lease the task
//! (`start_task`), prepare its job on this node, stage its files in, mark it running, run its
//! command, stage its files out, record the outcome (`complete_task`), publish the outbox, ack.
//!
//! The message is acked only after the outcome is recorded in Redis (and the outputs uploaded
//! before that). Every write names the attempt it belongs to, so if a newer attempt took the task
//! over, this one's outcome is refused and its message is simply dropped.

use super::acks::Inbound;
use super::command::{Command, Ended};
use super::{retention, NodeContext};
use crate::model::task::{FailureCode, FailureInfo, JobAction, TaskResult};
use crate::model::TaskMessage;
use crate::status::{AttemptRef, Completion, Outbox, Outcome, Start, Started, NODE_LEASE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// How an attempt's run ended on this node.
enum Run {
    Ended(Outcome),
    /// The node is leaving: the attempt was stopped and is handed back.
    HandedBack,
    /// A newer attempt owns the task.
    Stale,
}

/// A task this node owns an attempt of, with the delivery that brought it.
struct Attempt {
    ctx: Arc<NodeContext>,
    delivery: Inbound,
    msg: TaskMessage,
    started: Started,
    /// The task's directory on this node.
    dir: PathBuf,
    /// Cancelled to stop the task (its job ended, it was terminated, the node hands it back).
    kill: CancellationToken,
    /// The store's epoch when the delivery arrived (see `StatusStore::replicated`).
    epoch: u64,
}

/// Handles one delivery to its ack (or requeue, or dead letter). `msg` is its task message as
/// dispatch read it (`read_message`); `slots` are the node's slots it holds, freed as soon as
/// its outcome is recorded (the task's endTime).
pub(super) async fn handle(
    ctx: Arc<NodeContext>,
    delivery: Inbound,
    msg: std::result::Result<TaskMessage, String>,
    slots: OwnedSemaphorePermit,
) {
    let msg = match msg {
        Ok(m) => m,
        Err(e) => return reject(&ctx, &delivery, &e).await,
    };
    // Writes made for this delivery count only if the store's master does not move meanwhile.
    let epoch = ctx.store.epoch();
    let Some(started) = lease(&ctx, &delivery, &msg, epoch).await else { return };
    let dir = ctx.task_dir(&msg.job_id, &msg.task_id);
    // Boxed: the attempt is a kilobyte (its delivery, its task's spec), which the future of
    // each step below would otherwise hold, and copy, again. So are the futures of the rare
    // steps that are kilobytes (uploads, a job action, a job's preparation, publishing):
    // every attempt's future would be their size, 14 KB in all, and copied at each await.
    let attempt = Box::new(Attempt { kill: ctx.hand_back.child_token(), ctx, delivery, msg, started, dir, epoch });
    attempt.ctx.running_insert(&attempt.msg, attempt.kill.clone());
    tracing::debug!(job = %attempt.msg.job_id, task = %attempt.msg.task_id, attempt = attempt.started.attempt, "task started");
    let run = attempt.run().await;
    attempt.ctx.running_remove(&attempt.msg);
    attempt.record(run, slots).await;
}

/// A delivery's task message, its signature checked when the account signs its tasks; else why
/// it is no runnable task message.
pub(super) fn read_message(ctx: &NodeContext, body: &[u8]) -> std::result::Result<TaskMessage, String> {
    let msg = TaskMessage::parse(body).map_err(|e| e.to_string())?;
    msg.verify(ctx.store.signer()).map_err(|e| format!("task message of {}/{}: {e}", msg.job_id, msg.task_id))?;
    Ok(msg)
}

/// Step 1: start a new attempt, or settle the delivery when there is nothing to run. None when
/// the delivery has been settled.
async fn lease(ctx: &NodeContext, delivery: &Inbound, msg: &TaskMessage, epoch: u64) -> Option<Started> {
    let (pool, node) = (ctx.options.pool_id.as_str(), ctx.options.node_id.as_str());
    loop {
        let start = if ctx.runs(msg) {
            Ok(Start::Busy(node.to_string()))
        } else {
            ctx.persist("start_task", || ctx.store.start_task(pool, &msg.job_id, &msg.task_id, node)).await
        };
        match start {
            Ok(Start::Started(started)) => return Some(*started),
            Ok(Start::Poison(lost, outbox)) => {
                tracing::warn!(job = %msg.job_id, task = %msg.task_id, lost, "poison task: its node was lost every time; recorded as failed");
                publish_and_ack(ctx, delivery, &outbox, epoch).await;
            }
            // A redelivered message of a completed task: its completion may not have published
            // what it released (the node died between the two).
            Ok(Start::Done(outbox)) => {
                if publish_and_ack(ctx, delivery, &outbox, epoch).await {
                    tracing::debug!(job = %msg.job_id, task = %msg.task_id, "redelivered; the recorded outcome acked");
                }
            }
            Ok(Start::Gone | Start::Inactive(_) | Start::Waiting | Start::Parked) => {
                settle(ctx, delivery, epoch).await;
            }
            Ok(Start::OtherPool(other)) => {
                reject(ctx, delivery, &format!("job {:?} runs on pool {other:?}, not {pool:?}", msg.job_id)).await
            }
            Ok(Start::Busy(owner)) => {
                // A live node runs it (this is a duplicate or redelivered message): keep the
                // message until that attempt ends or its node is presumed dead.
                tracing::debug!(job = %msg.job_id, task = %msg.task_id, %owner, "task is running elsewhere; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(NODE_LEASE / 3) => continue,
                    _ = ctx.hand_back.cancelled() => delivery.requeue().await,
                }
            }
            // A store error never dead-letters a task: the message goes back (after a pause, so
            // a record that cannot be read does not spin) for this or another node to take.
            Err(e) => {
                tracing::error!(job = %msg.job_id, task = %msg.task_id, error = %e, "cannot start the task; handing the message back");
                if !e.is_transient() {
                    tokio::select! {
                        _ = tokio::time::sleep(NODE_LEASE / 3) => {}
                        _ = ctx.hand_back.cancelled() => {}
                    }
                }
                delivery.requeue().await
            }
        }
        return None;
    }
}

impl Attempt {
    /// Whether the node's watch killed this attempt to hand it back (its job was disabled).
    fn requeued(&self) -> bool {
        let key = (self.msg.job_id.clone(), self.msg.task_id.clone());
        self.ctx.requeued.lock().map(|mut r| r.remove(&key)).unwrap_or(false)
    }

    fn at(&self) -> AttemptRef<'_> {
        AttemptRef {
            pool: &self.ctx.options.pool_id,
            job: &self.msg.job_id,
            task: &self.msg.task_id,
            attempt: self.started.attempt,
        }
    }

    /// Steps 2 to 6: prepare the job, stage in, mark running, run, stage out.
    async fn run(&self) -> Run {
        if let Some(why) = &self.started.refused {
            // Changed in the store since it was added: it fails without running, and its message
            // goes to the dead letters too, with the reason, for the operator.
            tracing::error!(job = %self.msg.job_id, task = %self.msg.task_id, reason = %why, "task refused");
            if let Err(e) = self.ctx.publisher.dead_letter(&self.ctx.options.pool_id, self.delivery.data(), why).await {
                tracing::warn!(error = %e, "could not dead-letter a copy of the refused task's message");
            }
            let failure = FailureInfo::server(FailureCode::TaskRecordRefused, why.clone());
            return Run::Ended(Outcome { retryable: false, ..Outcome::failed(failure, None) });
        }
        let spec = &self.started.spec;
        let command = Command {
            command_line: &spec.command_line,
            resource_files: &spec.resource_files,
            packages: &spec.application_package_references,
            job_env: &[],
            own_env: &spec.environment_settings,
            job: Some(&self.msg.job_id),
            task: Some(&self.msg.task_id),
            prep_wd: None,
            dir: self.dir.clone(),
            wall_clock: spec.constraints.as_ref().and_then(|c| c.max_wall_clock_time).map(|d| d.0),
            identity: spec.user_identity.as_ref(),
            job_token: crate::model::task::AuthenticationTokenSettings::job(&spec.authentication_token_settings),
        };
        match super::job::prepared(&self.ctx, &self.msg.job_id).await {
            Ok(ready) => self.execute(Command { prep_wd: ready.prep_wd, job_env: &ready.env, ..command }).await,
            Err(failure) => Run::Ended(Outcome::failed(failure, None)),
        }
    }

    /// How long the task's directory stays on the node once the attempt ends.
    fn retention(&self) -> Duration {
        let constraints = self.started.spec.constraints.as_ref();
        constraints.and_then(|c| c.retention_time).map_or(retention::DEFAULT_RETENTION, |d| d.0)
    }

    async fn execute(&self, command: Command<'_>) -> Run {
        let stage = self.started.spec.needs_staging();
        let staged = match command.stage(&self.ctx, stage).await {
            Ok(staged) => staged,
            Err((failure, staged_in)) => {
                retention::mark(&self.dir, self.retention());
                return Run::Ended(Outcome { staged_in, ..Outcome::failed(failure, None) });
            }
        };
        let staged_in = staged.staged_in;
        if stage {
            match self.ctx.persist("run_task", || self.ctx.store.run_task(self.at())).await {
                Ok(true) => {}
                Ok(false) => return Run::Stale,
                Err(_) => return Run::HandedBack,
            }
        }
        // Once it has run, in one trip to the blocking pool: which of its stdout.txt and
        // stderr.txt to keep, and its directory's retention.
        let (dir, retention) = (self.dir.clone(), self.retention());
        let (ended, std_files) = staged
            .run_then(&self.ctx, &self.kill, move || {
                retention::mark(&dir, retention);
                std_files_to_keep(&dir)
            })
            .await;
        let mut outcome = match (&ended, ended.failure()) {
            (Ended::Killed, _) if self.ctx.hand_back.is_cancelled() || self.requeued() => return Run::HandedBack,
            // Like a node that died mid-task: the task runs again.
            (Ended::Lost, _) => return Run::HandedBack,
            (Ended::Killed, _) => {
                let why = "its job ended, or `drover task terminate` was run";
                Outcome { retryable: false, ..Outcome::failed(crate::status::terminated_failure(why), None) }
            }
            (_, None) => Outcome::success(),
            (_, Some(failure)) => Outcome::failed(failure, ended.exit_code()),
        };
        outcome.staged_in = staged_in;
        self.stage_out(outcome, &std_files).await
    }

    /// Step 6: uploads the non-empty stdout.txt and stderr.txt and the output files whose
    /// condition holds, if this attempt still owns the task.
    async fn stage_out(&self, mut outcome: Outcome, std_files: &[&'static str]) -> Run {
        let spec = &self.started.spec;
        if std_files.is_empty() && spec.output_files.is_empty() {
            return Run::Ended(outcome);
        }
        match self.ctx.persist("owns", || self.ctx.store.owns(self.at())).await {
            Ok(true) => {}
            Ok(false) => return Run::Stale,
            Err(_) => return Run::HandedBack,
        }
        let success = outcome.result == TaskResult::Success;
        // Boxed, like every rare step's future that is kilobytes (see `handle`).
        match Box::pin(self.upload(std_files, success)).await {
            Ok(n) => outcome.staged_out = n,
            Err(e) => {
                let failure = FailureInfo::user(FailureCode::FileUploadError, e.to_string());
                outcome = Outcome { staged_in: outcome.staged_in, ..Outcome::failed(failure, outcome.exit_code) };
            }
        }
        Run::Ended(outcome)
    }

    /// The uploads, on the node's transfer runtime.
    async fn upload(&self, std_files: &[&'static str], success: bool) -> Result<u64> {
        let (staging, dir, std_files) = (self.ctx.staging.clone(), self.dir.clone(), std_files.to_vec());
        let own = staging.task_files(&self.msg.job_id, &self.msg.task_id);
        let outputs = self.started.spec.output_files.clone();
        self.ctx
            .transfer(async move {
                let mut bytes = 0;
                for name in std_files {
                    let key = format!("{}/{name}", own.key);
                    bytes += staging.upload(&dir, Path::new(name), &own.bucket, &key).await?;
                }
                for (i, output) in outputs.into_iter().enumerate() {
                    if !output.upload_options.upload_condition.applies(success) {
                        continue;
                    }
                    let at = |e: Error| Error::Storage(format!("outputFiles[{i}]: {e}"));
                    // A pattern's walk of the task's tree is blocking work.
                    let under = dir.clone();
                    let walk = tokio::task::spawn_blocking(move || crate::staging::matching_files(&output, &under));
                    let matches = walk.await.map_err(|e| Error::Internal(format!("the output walk: {e}")));
                    for m in matches.flatten().map_err(at)? {
                        bytes += staging.upload_to(&dir, &m.file, &m.dest).await.map_err(at)?;
                    }
                }
                Ok(bytes)
            })
            .await
    }

    /// Steps 7 and 8: record how the attempt ended, free its slots, publish what that made
    /// runnable, ack.
    async fn record(self: Box<Self>, run: Run, slots: OwnedSemaphorePermit) {
        let (ctx, msg) = (&self.ctx, &self.msg);
        match run {
            Run::Stale => {
                tracing::warn!(job = %msg.job_id, task = %msg.task_id, attempt = self.started.attempt, "a newer attempt owns the task; this attempt's outcome was dropped");
                self.settle_stale().await
            }
            Run::HandedBack => {
                match ctx.persist("release_task", || ctx.store.release_task(self.at())).await.inspect(|_| drop(slots)) {
                    Ok(Some(outbox)) => {
                        tracing::info!(job = %msg.job_id, task = %msg.task_id, "task handed back");
                        publish_and_ack(ctx, &self.delivery, &outbox, self.epoch).await;
                    }
                    Ok(None) => {
                        settle(ctx, &self.delivery, self.epoch).await;
                    }
                    Err(_) => self.delivery.requeue().await,
                }
            }
            Run::Ended(outcome) => {
                let code = outcome.failure.as_ref().and_then(FailureInfo::known_code);
                let success = outcome.result == TaskResult::Success;
                let blocks = self.started.spec.blocks_dependents(success, outcome.exit_code, code);
                let completion =
                    ctx.persist("complete_task", || ctx.store.complete_task(self.at(), &outcome, blocks)).await;
                // The slots are free once the outcome (and a job action it calls for) is recorded.
                if self.started.exit_actions && !success && matches!(completion, Ok(Completion::Completed(_))) {
                    Box::pin(self.apply_job_action(&outcome)).await;
                }
                drop(slots);
                match completion {
                    Ok(Completion::Completed(outbox)) => {
                        tracing::debug!(job = %msg.job_id, task = %msg.task_id, exit_code = ?outcome.exit_code, result = ?outcome.result, "task completed");
                        ctx.count_run(msg, success);
                        if publish_and_ack(ctx, &self.delivery, &outbox, self.epoch).await {
                            tracing::debug!(job = %msg.job_id, task = %msg.task_id, attempt = self.started.attempt, node = %ctx.options.node_id, "outcome acked");
                        }
                    }
                    Ok(Completion::Retry(n, outbox)) => {
                        let delay = retry_delay(n);
                        tracing::info!(job = %msg.job_id, task = %msg.task_id, retry = n, ?delay, "task failed; retrying");
                        ctx.count_run(msg, false);
                        // The slot is free meanwhile; a node that dies here leaves the outbox,
                        // which the redelivered message publishes (without the delay).
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = ctx.hand_back.cancelled() => {}
                        }
                        publish_and_ack(ctx, &self.delivery, &outbox, self.epoch).await;
                    }
                    Ok(Completion::Stale) => {
                        tracing::warn!(job = %msg.job_id, task = %msg.task_id, "a newer attempt owns the task; this outcome was dropped");
                        self.settle_stale().await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record the outcome; handing the message back");
                        self.delivery.requeue().await
                    }
                }
            }
        }
    }

    /// Settles the delivery of an attempt that another one superseded. With a replicated store
    /// the message goes back instead of being acked: after a failover, "superseded" may only
    /// mean that the writes that started this attempt were lost, and then nothing else runs the
    /// task. The redelivery is held while another attempt runs, and is acked once it is done.
    async fn settle_stale(&self) {
        if self.ctx.store.is_replicated() {
            requeue_after_pause(&self.ctx, &self.delivery).await
        } else {
            settle(&self.ctx, &self.delivery, self.epoch).await;
        }
    }

    /// Applies a failed task's job action (its job's onTaskFailure is performExitOptionsJobAction).
    async fn apply_job_action(&self, outcome: &Outcome) {
        let code = outcome.failure.as_ref().and_then(FailureInfo::known_code);
        if self.started.spec.job_action_on_failure(outcome.exit_code, code) != JobAction::Terminate {
            return;
        }
        let (ctx, job) = (&self.ctx, &self.msg.job_id);
        match ctx.persist("terminate_job", || ctx.store.terminate_job(job, "TaskFailed")).await {
            Ok(_) => tracing::info!(%job, task = %self.msg.task_id, "task failed; job terminated by its exit options"),
            Err(e) => tracing::debug!(%job, error = %e, "job not terminated (already ended?)"),
        }
    }
}

/// How long a failed task waits before its retry number `n` (1, 2, ...) is published: 0.5 s,
/// doubling, at most 30 s, so a task that always fails does not spin.
fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

/// Publishes an outbox, then acks (true if it did); on failure the message goes back, and its
/// redelivery finds the outbox and publishes it again.
async fn publish_and_ack(ctx: &NodeContext, delivery: &Inbound, outbox: &Outbox, epoch: u64) -> bool {
    match ctx.publisher.publish_outbox(&ctx.store, &ctx.options.pool_id, outbox).await {
        Ok(()) => settle(ctx, delivery, epoch).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not publish what the task made runnable; handing the message back");
            delivery.requeue().await;
            false
        }
    }
}

/// Acks a delivery once what it caused is on the store's replicas (when the node must wait for
/// them); if that cannot be known in time (a failover), the message goes back and is handled
/// again, on the new master, where its outcome is recorded once. True if it acked.
async fn settle(ctx: &NodeContext, delivery: &Inbound, epoch: u64) -> bool {
    match ctx.store.replicated(epoch).await {
        Ok(true) => return delivery.ack(),
        Ok(false) => {
            tracing::warn!("the store's master moved, or its replicas did not confirm the writes in time; handing the message back");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot confirm the writes on the store's replicas; handing the message back");
        }
    }
    requeue_after_pause(ctx, delivery).await;
    false
}

/// How long a message whose writes could not be confirmed waits before it goes back: while a
/// failover settles, a message handed back at once would come straight back, again and again,
/// until the broker's delivery limit dead-letters it.
const REQUEUE_PAUSE: Duration = Duration::from_secs(2);

async fn requeue_after_pause(ctx: &NodeContext, delivery: &Inbound) {
    tokio::select! {
        _ = tokio::time::sleep(REQUEUE_PAUSE) => {}
        _ = ctx.hand_back.cancelled() => {}
    }
    delivery.requeue().await
}

/// Dead-letters a message that cannot be run, with the reason.
async fn reject(ctx: &NodeContext, delivery: &Inbound, reason: &str) {
    tracing::warn!(reason, "dead-lettering a message that is not a runnable task");
    match ctx.publisher.dead_letter(&ctx.options.pool_id, delivery.data(), reason).await {
        Ok(()) => {
            delivery.ack();
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not dead-letter; handing the message back");
            delivery.requeue().await
        }
    }
}

/// stdout.txt and stderr.txt unless empty: an empty file is not stored (a download of it
/// gives an empty file), which saves two uploads for the many tasks that print nothing.
/// Blocking.
fn std_files_to_keep(task_dir: &std::path::Path) -> Vec<&'static str> {
    ["stdout.txt", "stderr.txt"]
        .into_iter()
        .filter(|name| std::fs::symlink_metadata(task_dir.join(name)).is_ok_and(|m| !m.is_file() || m.len() > 0))
        .collect()
}
