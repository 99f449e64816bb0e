//! Task records and their transitions: add, start, run, complete, release; read and list.

use super::scripts::{COMPLETE_TASK, CREATE_TASKS, RELEASE_TASK, RUN_TASK, START_TASK, TERMINATE_TASK};
use super::StatusStore;
use crate::model::task::{FailureInfo, NodeInfo, TaskExecutionInfo, TaskResult};
use crate::model::{now_ms, rfc3339, CloudTask, EnvironmentSetting, TaskAddParameter, TaskMessage, TaskState};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

type NodeDirs = HashMap<String, Option<String>>;

/// A task as stored in Redis: the submitted JSON (verbatim but for its id, which the key holds)
/// and its status. Short names, and no field at its default, keep a completed task's record small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The TaskAddParameter JSON as submitted, without its `id`.
    pub spec: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<TaskState>,
    pub ctime: i64,
    pub stime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeue: u32,
    /// Attempts lost with their node (a poison task's count).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailureInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The fencing token: which attempt owns the task.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub slots: u32,
    #[serde(rename = "maxRetry", default, skip_serializing_if = "is_zero_i32")]
    pub max_retry: i32,
    /// Set once the task completed in a way that blocks its dependents (its dependencyAction).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dblk: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn one() -> u32 {
    1
}

impl TaskRecord {
    /// The record of a task just added.
    pub fn new(spec: &TaskAddParameter, job_max_retry: i32, now: i64) -> Self {
        TaskRecord {
            spec: spec_without_id(spec),
            state: TaskState::Active,
            prev: None,
            ctime: now,
            stime: now,
            start: None,
            end: None,
            exit: None,
            retry: 0,
            requeue: 0,
            lost: 0,
            result: None,
            fail: None,
            node: None,
            attempt: 0,
            slots: spec.slots(),
            max_retry: spec.constraints.as_ref().and_then(|c| c.max_task_retry_count).unwrap_or(job_max_retry),
            dblk: 0,
        }
    }

    /// The task as users see it. `pool` is its job's pool; `root` its directory on its node.
    pub fn to_cloud_task(&self, id: &str, pool: &str, root: Option<String>) -> Result<CloudTask> {
        let spec = stored_spec(id, &self.spec)?;
        let execution_info = (self.attempt > 0 || self.retry > 0 || self.requeue > 0).then(|| TaskExecutionInfo {
            start_time: self.start.map(rfc3339),
            end_time: self.end.map(rfc3339),
            exit_code: self.exit,
            retry_count: self.retry,
            requeue_count: self.requeue,
            result: self.result,
            failure_info: self.fail.clone(),
        });
        let node_info = self.node.as_ref().map(|node| NodeInfo {
            pool_id: pool.to_string(),
            node_id: node.clone(),
            task_root_directory: root,
        });
        Ok(CloudTask {
            spec,
            state: self.state,
            creation_time: rfc3339(self.ctime),
            state_transition_time: rfc3339(self.stime),
            previous_state: self.prev,
            execution_info,
            node_info,
        })
    }
}

fn spec_without_id(spec: &TaskAddParameter) -> String {
    match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("id");
            serde_json::Value::Object(map).to_string()
        }
        _ => String::new(),
    }
}

/// The task a record's spec (stored without its id) describes.
fn stored_spec(id: &str, spec: &str) -> Result<TaskAddParameter> {
    let unreadable = |e: serde_json::Error| Error::State(format!("stored task {id:?} is unreadable: {e}"));
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(spec).map_err(unreadable)?;
    map.insert("id".into(), id.into());
    serde_json::from_value(map.into()).map_err(unreadable)
}

/// What `start_task` decided.
#[derive(Debug)]
pub enum Start {
    /// This node owns a new attempt of the task.
    Started {
        attempt: u32,
        spec: Box<TaskAddParameter>,
        job_env: Vec<EnvironmentSetting>,
        /// Whether a failure applies the task's exit options to the job (onTaskFailure).
        exit_actions: bool,
        /// The job's priority (for the messages this attempt publishes).
        priority: i32,
    },
    /// The task completed already (a duplicate message). Its completion's outbox, if a crash
    /// left it unpublished, must be published before the ack.
    Done(Vec<TaskMessage>),
    /// The task or its job no longer exists.
    Gone,
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
    Poison(u32, Vec<TaskMessage>),
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

/// What `complete_task` decided. The messages are tasks the transition made runnable (released
/// dependents, a parked task): the caller publishes them, then calls `clear_outbox`, then acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The task is completed (once, whatever happens later).
    Completed(Vec<TaskMessage>),
    /// The task is active again for its retry number `n`; the caller publishes it again.
    Retry(u32, Vec<TaskMessage>),
    /// A newer attempt owns the task; this attempt's outcome was not recorded.
    Stale,
}

/// What `terminate_task` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The task was not running: it is completed now. Publish the outbox (released dependents).
    Terminated(Vec<TaskMessage>),
    /// It runs on this live node, which will kill it and record it.
    Killing(String),
    /// It had completed already.
    AlreadyCompleted,
}

/// The failure recorded for a terminated task.
pub fn terminated_failure(why: &str) -> FailureInfo {
    FailureInfo::user("TaskTerminated", format!("the task was terminated: {why}"))
}

/// The messages of an outbox (an entry that is not a message is logged and left out).
fn outbox(priority: i32, entries: impl IntoIterator<Item = String>) -> Vec<TaskMessage> {
    entries
        .into_iter()
        .filter_map(|e| {
            TaskMessage::from_outbox(&e, priority)
                .map_err(|err| tracing::warn!(entry = %e, error = %err, "bad outbox entry"))
                .ok()
        })
        .collect()
}

fn reply(values: Vec<String>) -> Result<(String, Vec<String>)> {
    let mut it = values.into_iter();
    let head = it.next().ok_or_else(|| Error::State("empty reply from a status script".into()))?;
    Ok((head, it.collect()))
}

impl StatusStore {
    /// Adds `tasks` to `job` atomically: all of them, or none with the reason (unknown job, a job
    /// that is not active, a duplicate id). Returns the ids held back by their dependencies (not
    /// to be published now: their last parent's completion publishes them).
    pub async fn add_tasks(
        &self,
        job: &str,
        job_max_retry: i32,
        tasks: &[TaskAddParameter],
    ) -> Result<std::collections::HashSet<String>> {
        let now = now_ms();
        let mut inv = CREATE_TASKS.script.prepare_invoke();
        inv.key(self.keys.job(job)).key(self.keys.job_tasks(job));
        for t in tasks {
            inv.key(self.keys.task(job, &t.id));
        }
        inv.arg(self.keys.prefix()).arg(job).arg(now);
        for t in tasks {
            let record = serde_json::to_string(&TaskRecord::new(t, job_max_retry, now)).unwrap_or_default();
            let parents = t.parent_ids()?;
            inv.arg(&t.id).arg(record).arg(t.slots()).arg(TaskMessage::for_task(job, t).to_bytes());
            inv.arg(parents.len()).arg(parents);
        }
        let (head, rest) = reply(inv.invoke_async(&mut self.con()).await?)?;
        match head.as_str() {
            "ok" => Ok(rest.into_iter().skip(1).collect()),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "jobstate" => Err(Error::State(format!(
                "job {job:?} is {}: tasks can only be added to an active job",
                rest.first().map_or("", String::as_str)
            ))),
            "dup" => Err(Error::invalid(format!(
                "task {:?} already exists in job {job:?}",
                rest.first().map_or("", String::as_str)
            ))),
            other => Err(Error::State(format!("unexpected reply {other:?} from create_tasks"))),
        }
    }

    /// Of `ids`, those that already exist in `job` (one pipelined round trip).
    pub async fn existing_tasks<'a>(&self, job: &str, ids: &[&'a str]) -> Result<Vec<&'a str>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(self.keys.task(job, id));
        }
        let found: Vec<bool> = pipe.query_async(&mut self.con()).await?;
        Ok(ids.iter().zip(found).filter(|(_, f)| *f).map(|(id, _)| *id).collect())
    }

    /// Starts a new attempt of the task `msg` names on `node`, unless it is done, gone, held, or
    /// run by a live node.
    pub async fn start_task(&self, msg: &TaskMessage, node: &str) -> Result<Start> {
        let (job, task) = (msg.job_id.as_str(), msg.task_id.as_str());
        let values: Vec<String> = START_TASK
            .script
            .key(self.keys.task(job, task))
            .key(self.keys.job(job))
            .arg(node)
            .arg(now_ms())
            .arg(if msg.stage { "1" } else { "0" })
            .arg(self.keys.node_prefix())
            .arg(super::MAX_LOST_ATTEMPTS)
            .arg(self.keys.prefix())
            .arg(job)
            .arg(task)
            .arg(TaskMessage { priority: 0, ..msg.clone() }.to_bytes())
            .invoke_async(&mut self.con())
            .await?;
        let (head, rest) = reply(values)?;
        let arg = |i: usize| rest.get(i).cloned().unwrap_or_default();
        let int = |i: usize| arg(i).parse::<i32>().unwrap_or(0);
        Ok(match head.as_str() {
            "ok" => {
                let attempt = arg(0).parse().map_err(|_| Error::State("bad attempt in start_task reply".into()))?;
                let spec = stored_spec(task, &arg(1))?;
                let env = arg(2);
                let job_env = if env.is_empty() { vec![] } else { serde_json::from_str(&env).unwrap_or_default() };
                Start::Started { attempt, spec: Box::new(spec), job_env, exit_actions: arg(3) == "1", priority: int(4) }
            }
            "done" => Start::Done(outbox(int(0), rest.into_iter().skip(1))),
            "poison" => Start::Poison(int(0) as u32, outbox(int(1), rest.into_iter().skip(2))),
            "gone" => Start::Gone,
            "inactive" => Start::Inactive(arg(0)),
            "busy" => Start::Busy(arg(0)),
            "waiting" => Start::Waiting,
            "parked" => Start::Parked,
            other => return Err(Error::State(format!("unexpected reply {other:?} from start_task"))),
        })
    }

    /// preparing -> running for `attempt`; false if a newer attempt owns the task.
    pub async fn run_task(&self, job: &str, task: &str, attempt: u32) -> Result<bool> {
        let values: Vec<String> = RUN_TASK
            .script
            .key(self.keys.task(job, task))
            .arg(attempt)
            .arg(now_ms())
            .invoke_async(&mut self.con())
            .await?;
        Ok(reply(values)?.0 == "ok")
    }

    /// Records how `attempt` ended: completed, or active again for a retry. `blocks` says whether
    /// the outcome blocks the task's dependents (its dependencyAction); `priority` is the job's.
    pub async fn complete_task(
        &self,
        job: &str,
        task: &str,
        attempt: u32,
        outcome: &Outcome,
        blocks: bool,
        priority: i32,
    ) -> Result<Completion> {
        let failure =
            outcome.failure.as_ref().map(|f| serde_json::to_string(f).unwrap_or_default()).unwrap_or_default();
        let values: Vec<String> = COMPLETE_TASK
            .script
            .key(self.keys.task(job, task))
            .key(self.keys.job(job))
            .arg(attempt)
            .arg(now_ms())
            .arg(outcome.exit_code.map(|c| c.to_string()).unwrap_or_default())
            .arg(match outcome.result {
                TaskResult::Success => "success",
                TaskResult::Failure => "failure",
            })
            .arg(failure)
            .arg(if outcome.retryable { "1" } else { "0" })
            .arg(if blocks { "1" } else { "0" })
            .arg(self.keys.prefix())
            .arg(job)
            .arg(task)
            .arg(outcome.staged_in)
            .arg(outcome.staged_out)
            .invoke_async(&mut self.con())
            .await?;
        let (head, rest) = reply(values)?;
        Ok(match head.as_str() {
            "completed" => Completion::Completed(outbox(priority, rest)),
            "retry" => {
                let n = rest.first().and_then(|n| n.parse().ok()).unwrap_or(0);
                Completion::Retry(n, outbox(priority, rest.into_iter().skip(1)))
            }
            _ => Completion::Stale,
        })
    }

    /// Forgets the outbox of `task`'s last transition, once its messages are confirmed.
    pub async fn clear_outbox(&self, job: &str, task: &str) -> Result<()> {
        let _: () = redis::cmd("DEL").arg(self.keys.outbox(job, task)).query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Terminates a task (`drover task terminate`): see [`Termination`].
    pub async fn terminate_task(&self, job: &str, task: &str, spec_blocks: bool) -> Result<Termination> {
        let failure = serde_json::to_string(&terminated_failure("drover task terminate")).unwrap_or_default();
        let values: Vec<String> = TERMINATE_TASK
            .script
            .key(self.keys.task(job, task))
            .key(self.keys.job(job))
            .arg(now_ms())
            .arg(self.keys.prefix())
            .arg(job)
            .arg(task)
            .arg(self.keys.node_prefix())
            .arg(failure)
            .arg(if spec_blocks { "1" } else { "0" })
            .invoke_async(&mut self.con())
            .await?;
        let (head, rest) = reply(values)?;
        Ok(match head.as_str() {
            "ok" => {
                let priority = rest.first().and_then(|p| p.parse().ok()).unwrap_or(0);
                Termination::Terminated(outbox(priority, rest.into_iter().skip(1)))
            }
            "killing" => Termination::Killing(rest.into_iter().next().unwrap_or_default()),
            "completed" => Termination::AlreadyCompleted,
            _ => return Err(Error::NotFound { kind: "task", id: task.into() }),
        })
    }

    /// Hands `attempt` back (the node is leaving): the task is active again, requeueCount + 1.
    /// Returns the outbox (a parked task the freed slot lets start), or None if stale.
    pub async fn release_task(
        &self,
        job: &str,
        task: &str,
        attempt: u32,
        priority: i32,
    ) -> Result<Option<Vec<TaskMessage>>> {
        let values: Vec<String> = RELEASE_TASK
            .script
            .key(self.keys.task(job, task))
            .key(self.keys.job(job))
            .arg(attempt)
            .arg(now_ms())
            .arg(self.keys.prefix())
            .arg(job)
            .arg(task)
            .invoke_async(&mut self.con())
            .await?;
        let (head, rest) = reply(values)?;
        Ok((head == "ok").then(|| outbox(priority, rest)))
    }

    /// Whether `attempt` still owns the task (checked before uploading outputs, so a stale
    /// attempt does not overwrite the files of a newer one).
    pub async fn owns(&self, job: &str, task: &str, attempt: u32) -> Result<bool> {
        match self.task_record(job, task).await {
            Ok(r) => Ok(r.attempt == attempt && matches!(r.state, TaskState::Preparing | TaskState::Running)),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The stored record of a task.
    pub async fn task_record(&self, job: &str, task: &str) -> Result<TaskRecord> {
        let raw: Option<String> = redis::cmd("GET").arg(self.keys.task(job, task)).query_async(&mut self.con()).await?;
        let raw = raw.ok_or_else(|| Error::NotFound { kind: "task", id: task.into() })?;
        serde_json::from_str(&raw).map_err(|e| Error::State(format!("stored task {task:?} is unreadable: {e}")))
    }

    /// One task as users see it.
    pub async fn get_task(&self, job: &str, task: &str) -> Result<CloudTask> {
        let pool = self.job_pool(job).await?;
        let record = self.task_record(job, task).await?;
        let root = self.task_root(&mut NodeDirs::default(), &record, job, task).await?;
        record.to_cloud_task(task, &pool, root)
    }

    /// Where a task's directory is on the node that ran it (nodes record their work directory).
    async fn task_root(
        &self,
        dirs: &mut NodeDirs,
        record: &TaskRecord,
        job: &str,
        task: &str,
    ) -> Result<Option<String>> {
        let Some(node) = &record.node else { return Ok(None) };
        if !dirs.contains_key(node) {
            let dir: Option<String> =
                redis::cmd("GET").arg(self.keys.node_info(node)).query_async(&mut self.con()).await?;
            dirs.insert(node.clone(), dir);
        }
        Ok(dirs[node].as_ref().map(|d| format!("{d}/{}/jobs/{job}/{task}", self.keys.account())))
    }

    /// Records where `node` keeps task directories (for `nodeInfo.taskRootDirectory`).
    pub async fn register_node(&self, node: &str, work_dir: &str) -> Result<()> {
        let _: () = redis::cmd("SET").arg(self.keys.node_info(node)).arg(work_dir).query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Calls `each` for every task of `job` (in the order they were added) whose state is `state`,
    /// reading the records in pages.
    pub async fn for_each_task(
        &self,
        job: &str,
        state: Option<TaskState>,
        mut each: impl FnMut(CloudTask) -> Result<()>,
    ) -> Result<()> {
        let pool = self.job_pool(job).await?;
        let mut dirs = NodeDirs::default();
        const PAGE: isize = 1000;
        let mut start = 0isize;
        loop {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(self.keys.job_tasks(job))
                .arg(start)
                .arg(start + PAGE - 1)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                return Ok(());
            }
            let keys: Vec<String> = ids.iter().map(|id| self.keys.task(job, id)).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.con()).await?;
            for (id, raw) in ids.iter().zip(raws) {
                let Some(raw) = raw else { continue };
                let record: TaskRecord = serde_json::from_str(&raw)
                    .map_err(|e| Error::State(format!("stored task {id:?} is unreadable: {e}")))?;
                if state.is_none_or(|s| s == record.state) {
                    let root = self.task_root(&mut dirs, &record, job, id).await?;
                    each(record.to_cloud_task(id, &pool, root)?)?;
                }
            }
            start += PAGE;
        }
    }
}
