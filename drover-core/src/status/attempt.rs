//! An attempt's transitions: a node starts a task, runs it, and completes it or hands it back.
//! Each is one script (`lua/<name>.lua`) with a typed argument struct and a typed reply.

use super::outbox::Outbox;
use super::scripts::{Reply, COMPLETE_TASK, RELEASE_TASK, RUN_TASK, START_TASK};
use super::task::stored_spec;
use super::{flag, StatusStore, MAX_LOST_ATTEMPTS};
use crate::model::task::{FailureInfo, TaskResult};
use crate::model::{now_ms, TaskAddParameter};
use crate::{Error, Result};

/// A task a node runs now: the ids and the attempt that owns it.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRef<'a> {
    pub pool: &'a str,
    pub job: &'a str,
    pub task: &'a str,
    pub attempt: u32,
}

/// A new attempt this node owns.
#[derive(Debug)]
pub struct Started {
    pub attempt: u32,
    /// Its spec; the job's environment comes from the job's checked record (`get_job_checked`).
    pub spec: TaskAddParameter,
    /// Whether a failure applies the task's exit options to the job (onTaskFailure).
    pub exit_actions: bool,
    /// Why the task must not run: its record does not verify against the account's signing keys,
    /// or its spec is not valid (then `spec` is empty but for the id).
    pub refused: Option<String>,
}

/// What `start_task` decided.
#[derive(Debug)]
pub enum Start {
    /// This node owns a new attempt of the task.
    Started(Box<Started>),
    /// The task completed already (a duplicate message). Its completion's outbox, if a crash
    /// left it unpublished, must be published before the ack.
    Done(Outbox),
    /// The task or its job no longer exists.
    Gone,
    /// The task's job runs on another pool than the node's (a misrouted message).
    OtherPool(String),
    /// The job is not active (terminating, completed or disabled).
    Inactive(String),
    /// A live node runs the task now.
    Busy(String),
    /// Its dependencies are not satisfied yet: the message is dropped, and the task is published
    /// again when its last parent completes.
    Waiting,
    /// Its job runs `maxParallelTasks` tasks already: the message is dropped, and the task is
    /// published again when one of them ends.
    Parked,
    /// The nodes running the task were lost this many times in a row: it was recorded as
    /// failed (`NodeLostRepeatedly`) instead of being run again. Publish the outbox.
    Poison(u32, Outbox),
}

/// How an attempt ended, as the node reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub result: TaskResult,
    pub failure: Option<FailureInfo>,
    /// Whether the failure may be retried under `maxTaskRetryCount`.
    pub retryable: bool,
    /// Bytes this attempt downloaded (resource files, packages) and uploaded (outputs).
    pub staged_in: u64,
    pub staged_out: u64,
}

impl Outcome {
    /// The process exited with 0.
    pub fn success() -> Self {
        Outcome {
            exit_code: Some(0),
            result: TaskResult::Success,
            failure: None,
            retryable: false,
            staged_in: 0,
            staged_out: 0,
        }
    }

    /// The attempt failed (retryable under `maxTaskRetryCount`).
    pub fn failed(failure: FailureInfo, exit_code: Option<i32>) -> Self {
        Outcome {
            exit_code,
            result: TaskResult::Failure,
            failure: Some(failure),
            retryable: true,
            staged_in: 0,
            staged_out: 0,
        }
    }
}

/// What `complete_task` decided. The outbox holds the tasks the transition made runnable
/// (released dependents, a parked task, the task itself for a retry): the caller publishes it,
/// clears it, then acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The task is completed (once, whatever happens later).
    Completed(Outbox),
    /// The task is active again for its retry number `n`.
    Retry(u32, Outbox),
    /// A newer attempt owns the task; this attempt's outcome was not recorded.
    Stale,
}

/// `start_task.lua`'s arguments.
struct StartTask<'a> {
    pool: &'a str,
    job: &'a str,
    task: &'a str,
    node: &'a str,
    now: i64,
}

/// `complete_task.lua`'s arguments.
struct CompleteTask<'a> {
    at: AttemptRef<'a>,
    now: i64,
    outcome: &'a Outcome,
    /// Whether the outcome blocks the task's dependents (its dependencyAction).
    blocks: bool,
}

impl StatusStore {
    fn task_outbox(&self, job: &str, task: &str, entries: Vec<String>) -> Outbox {
        let keys = self.keys.job(job);
        Outbox::new(&keys, keys.outbox(task), entries)
    }

    /// Starts a new attempt of `task` of `job` on `node` of `pool`, unless it is done, gone,
    /// held, or run by a live node.
    pub async fn start_task(&self, pool: &str, job: &str, task: &str, node: &str) -> Result<Start> {
        let a = StartTask { pool, job, task, node, now: now_ms() };
        let mut inv = START_TASK.prepare();
        for key in self.keys.task_transition(a.pool, a.job, a.task) {
            inv.key(key);
        }
        inv.arg(a.node)
            .arg(a.now)
            .arg(self.keys.node_prefix())
            .arg(MAX_LOST_ATTEMPTS)
            .arg(a.job)
            .arg(a.task)
            .arg(a.pool);
        let reply = START_TASK.run(inv, &mut self.con()).await?;
        Ok(match reply.head.as_str() {
            "ok" => {
                let (spec, refused) = match self.checked_spec(job, task, reply.at(1)?, reply.at(3).ok()) {
                    Ok(spec) => (spec, None),
                    Err(why) => (TaskAddParameter { id: task.to_string(), ..Default::default() }, Some(why)),
                };
                Start::Started(Box::new(Started {
                    attempt: reply.number(0)?,
                    spec,
                    exit_actions: reply.at(2)? == "1",
                    refused,
                }))
            }
            "done" => Start::Done(self.task_outbox(job, task, reply.from(0))),
            "poison" => {
                let lost = reply.number(0)?;
                Start::Poison(lost, self.task_outbox(job, task, reply.from(1)))
            }
            "gone" => Start::Gone,
            "otherpool" => Start::OtherPool(reply.at(0)?.to_string()),
            "inactive" => Start::Inactive(reply.at(0)?.to_string()),
            "busy" => Start::Busy(reply.at(0)?.to_string()),
            "waiting" => Start::Waiting,
            "parked" => Start::Parked,
            _ => return Err(reply.unexpected()),
        })
    }

    /// The spec a worker may run: it verifies against the account's signing keys (when it has
    /// them) and is valid, as when it was added; else why not.
    fn checked_spec(
        &self,
        job: &str,
        task: &str,
        text: &str,
        sig: Option<&str>,
    ) -> std::result::Result<TaskAddParameter, String> {
        if let Some(signer) = self.signer() {
            signer
                .verify(crate::signing::Kind::Task, &[job, task, text], sig)
                .map_err(|e| format!("the task's record was refused: {e}"))?;
        }
        let spec = stored_spec(task, text).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| format!("the task's stored spec is not valid: {e}"))?;
        Ok(spec)
    }

    /// preparing -> running for the attempt; false if a newer attempt owns the task.
    pub async fn run_task(&self, at: AttemptRef<'_>) -> Result<bool> {
        let mut inv = RUN_TASK.prepare();
        for key in self.keys.task_transition(at.pool, at.job, at.task) {
            inv.key(key);
        }
        inv.arg(at.attempt).arg(now_ms());
        let reply = RUN_TASK.run(inv, &mut self.con()).await?;
        fresh_or_stale(&reply)
    }

    /// Records how the attempt ended: completed, or active again for a retry. `blocks` says
    /// whether the outcome blocks the task's dependents (its dependencyAction).
    pub async fn complete_task(&self, at: AttemptRef<'_>, outcome: &Outcome, blocks: bool) -> Result<Completion> {
        let a = CompleteTask { at, now: now_ms(), outcome, blocks };
        let failure = match &a.outcome.failure {
            Some(f) => serde_json::to_string(f).map_err(|e| Error::Internal(format!("failureInfo: {e}")))?,
            None => String::new(),
        };
        let mut inv = COMPLETE_TASK.prepare();
        for key in self.keys.task_transition(a.at.pool, a.at.job, a.at.task) {
            inv.key(key);
        }
        inv.arg(a.at.attempt)
            .arg(a.now)
            .arg(a.outcome.exit_code.map(|c| c.to_string()).unwrap_or_default())
            .arg(match a.outcome.result {
                TaskResult::Success => "success",
                TaskResult::Failure => "failure",
            })
            .arg(failure)
            .arg(flag(a.outcome.retryable))
            .arg(flag(a.blocks))
            .arg(a.at.job)
            .arg(a.at.task)
            .arg(a.outcome.staged_in)
            .arg(a.outcome.staged_out);
        let reply = COMPLETE_TASK.run(inv, &mut self.con()).await?;
        Ok(match reply.head.as_str() {
            "completed" => Completion::Completed(self.task_outbox(at.job, at.task, reply.from(0))),
            "retry" => {
                let n = reply.number(0)?;
                Completion::Retry(n, self.task_outbox(at.job, at.task, reply.from(1)))
            }
            "stale" => Completion::Stale,
            _ => return Err(reply.unexpected()),
        })
    }

    /// Hands the attempt back (the node is leaving): the task is active again, requeueCount + 1.
    /// Returns the outbox (the task's own message, and a parked task the freed slot lets start),
    /// or None if a newer attempt owns the task.
    pub async fn release_task(&self, at: AttemptRef<'_>) -> Result<Option<Outbox>> {
        let mut inv = RELEASE_TASK.prepare();
        for key in self.keys.task_transition(at.pool, at.job, at.task) {
            inv.key(key);
        }
        inv.arg(at.attempt).arg(now_ms()).arg(at.job).arg(at.task);
        let reply = RELEASE_TASK.run(inv, &mut self.con()).await?;
        Ok(match reply.head.as_str() {
            "ok" => Some(self.task_outbox(at.job, at.task, reply.from(0))),
            "stale" => None,
            _ => return Err(reply.unexpected()),
        })
    }
}

/// `{'ok'}` or `{'stale'}`.
fn fresh_or_stale(reply: &Reply) -> Result<bool> {
    match reply.head.as_str() {
        "ok" => Ok(true),
        "stale" => Ok(false),
        _ => Err(reply.unexpected()),
    }
}
