//! Task records and their transitions: add, start, run, complete, release; read and list.

use super::outbox::Outbox;
use super::scripts::{CREATE_TASKS, DELETE_TASK, REACTIVATE_TASK, REPLACE_RECORD, REQUEUE_TASKS, TERMINATE_TASK};
use super::{flag, StatusStore};
use crate::model::task::{FailureCode, FailureInfo, NodeInfo, TaskExecutionInfo, TaskResult};
use crate::model::{now_ms, rfc3339, CloudTask, TaskAddParameter, TaskMessage, TaskState};
use crate::signing::{Kind, Signer};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;

type NodeDirs = HashMap<String, Option<String>>;

/// A task as stored in Redis: the submitted JSON (verbatim but for its id, which the key holds)
/// and its status. Short names, and no field at its default, keep a completed task's record small;
/// it is stored with each field under its one-letter alias ([`TaskRecord::encode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The TaskAddParameter JSON as submitted, without its `id`.
    #[serde(alias = "p")]
    pub spec: String,
    #[serde(alias = "s")]
    pub state: TaskState,
    #[serde(alias = "v", default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<TaskState>,
    #[serde(alias = "c")]
    pub ctime: i64,
    #[serde(alias = "t")]
    pub stime: i64,
    #[serde(alias = "b", default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(alias = "e", default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    #[serde(alias = "x", default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    #[serde(alias = "r", default, skip_serializing_if = "is_zero")]
    pub retry: u32,
    #[serde(alias = "q", default, skip_serializing_if = "is_zero")]
    pub requeue: u32,
    /// Attempts lost with their node (a poison task's count).
    #[serde(alias = "l", default, skip_serializing_if = "is_zero")]
    pub lost: u32,
    #[serde(alias = "o", default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(alias = "f", default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailureInfo>,
    #[serde(alias = "n", default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The fencing token: which attempt owns the task.
    #[serde(alias = "a", default)]
    pub attempt: u32,
    #[serde(alias = "z", default = "one", skip_serializing_if = "is_one")]
    pub slots: u32,
    #[serde(alias = "m", rename = "maxRetry", default, skip_serializing_if = "is_zero_i32")]
    pub max_retry: i32,
    /// Set once the task completed in a way that blocks its dependents (its dependencyAction).
    #[serde(alias = "d", default, skip_serializing_if = "is_zero")]
    pub dblk: u32,
    /// 1 when an attempt stages files first (resource files or packages): it starts `preparing`.
    #[serde(alias = "g", default, skip_serializing_if = "is_zero")]
    pub stg: u32,
    /// The signature over the job, the task and its spec ([`crate::signing`]), when signed.
    #[serde(alias = "i", default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Its messages' signature, which the status scripts copy into every message they make.
    #[serde(alias = "j", default, skip_serializing_if = "Option::is_none")]
    pub msig: Option<String>,
}

/// Each field's name in a stored record ([`TaskRecord::encode`]): its serde alias, and the name
/// `lua/includes/record.lua` stores it under (a unit test compares them).
const STORED_NAMES: [(&str, &str); 21] = [
    ("spec", "p"),
    ("state", "s"),
    ("prev", "v"),
    ("ctime", "c"),
    ("stime", "t"),
    ("start", "b"),
    ("end", "e"),
    ("exit", "x"),
    ("retry", "r"),
    ("requeue", "q"),
    ("lost", "l"),
    ("result", "o"),
    ("fail", "f"),
    ("node", "n"),
    ("attempt", "a"),
    ("slots", "z"),
    ("maxRetry", "m"),
    ("dblk", "d"),
    ("stg", "g"),
    ("sig", "i"),
    ("msig", "j"),
];

/// The first byte of a stored record ([`TaskRecord::encode`]): one that MessagePack never uses,
/// so that code from before the one-letter names fails on it rather than misreads it.
const STORED_MARK: u8 = 0xc1;

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
            stg: u32::from(spec.needs_staging()),
            sig: None,
            msig: None,
        }
    }

    /// The record as it is stored (as `lua/includes/record.lua`'s store_record stores it): a
    /// mark byte (0xC1), then MessagePack with each field under its one-letter name,
    /// its times relative to `ctime` and, once completed, without what completion implies.
    pub fn encode(&self, task: &str) -> Result<Vec<u8>> {
        let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("task {task:?}: {e}"));
        let mut r = self.clone();
        if r.state == TaskState::Completed {
            if r.end == Some(r.stime) {
                r.end = None;
            }
            if r.prev == Some(TaskState::Running) {
                r.prev = None;
            }
            if r.result == Some(TaskResult::Success) {
                r.result = None;
            }
        }
        let ctime = r.ctime;
        r.stime = r.stime.saturating_sub(ctime);
        for t in [&mut r.start, &mut r.end].into_iter().flatten() {
            *t = t.saturating_sub(ctime);
        }
        let serde_json::Value::Object(fields) = serde_json::to_value(&r).map_err(|e| failed(&e))? else {
            return Err(failed(&"not an object"));
        };
        let stored: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(field, value)| {
                let name = STORED_NAMES.iter().find(|(f, _)| *f == field).map_or(field, |(_, name)| name.to_string());
                (name, value)
            })
            .collect();
        let mut out = vec![STORED_MARK];
        rmp_serde::encode::write_named(&mut out, &stored).map_err(|e| failed(&e))?;
        Ok(out)
    }

    /// Reads task `task`'s stored record: as [`TaskRecord::encode`] and `lua/includes/record.lua`
    /// store it, or in a form stored before: JSON, or MessagePack with the fields' own names
    /// (its times relative to `ctime` and, once completed, without `end` = `stime`, `prev`
    /// running and `result` success, as now).
    pub fn decode(task: &str, raw: &[u8]) -> Result<TaskRecord> {
        let unreadable = |e: &dyn std::fmt::Display| Error::Corrupt(format!("stored task {task:?} is unreadable: {e}"));
        let packed = match raw.first() {
            Some(b'{') => return serde_json::from_slice(raw).map_err(|e| unreadable(&e)),
            Some(&STORED_MARK) => &raw[1..],
            _ => raw,
        };
        let mut r: TaskRecord = rmp_serde::from_slice(packed).map_err(|e| unreadable(&e))?;
        let ctime = r.ctime;
        r.stime = r.stime.saturating_add(ctime);
        for t in [&mut r.start, &mut r.end].into_iter().flatten() {
            *t = t.saturating_add(ctime);
        }
        if r.state == TaskState::Completed {
            r.end.get_or_insert(r.stime);
            r.prev.get_or_insert(TaskState::Running);
            r.result.get_or_insert(TaskResult::Success);
        }
        Ok(r)
    }

    /// Signs the record and its messages with the account's first key.
    pub fn sign(&mut self, signer: &Signer, job: &str, task: &str) {
        self.sig = Some(signer.sign(Kind::Task, &[job, task, &self.spec]));
        let fields = TaskMessage::signed_fields(job, task, self.slots, self.stg == 1);
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.msig = Some(signer.sign(Kind::Message, &fields));
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
pub(super) fn stored_spec(id: &str, spec: &str) -> Result<TaskAddParameter> {
    let unreadable = |e: serde_json::Error| Error::Corrupt(format!("stored task {id:?} is unreadable: {e}"));
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(spec).map_err(unreadable)?;
    map.insert("id".into(), id.into());
    serde_json::from_value(map.into()).map_err(unreadable)
}

/// `create_tasks.lua`'s arguments.
struct CreateTasks<'a> {
    job: &'a str,
    job_max_retry: i32,
    priority: i32,
    now: i64,
    tasks: &'a [TaskAddParameter],
}

/// `terminate_task.lua`'s arguments.
struct TerminateTask<'a> {
    pool: &'a str,
    job: &'a str,
    task: &'a str,
    now: i64,
    failure: String,
    blocks: bool,
}

/// `requeue_tasks.lua`'s arguments.
struct RequeueTasks<'a> {
    job: &'a str,
    ids: &'a [&'a str],
}

/// What `terminate_task` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The task was not running: it is completed now. Publish the outbox (released dependents).
    Terminated(Outbox),
    /// It runs on this live node, which will kill it and record it.
    Killing(String),
    /// It had completed already.
    AlreadyCompleted,
}

/// The failure recorded for a terminated task.
pub fn terminated_failure(why: &str) -> FailureInfo {
    FailureInfo::user(FailureCode::TaskTerminated, format!("the task was terminated: {why}"))
}

impl StatusStore {
    /// Adds `tasks` to `job` atomically: all of them, or none with the reason (unknown job, a job
    /// that is not active, a duplicate id). `priority` is the job's; `batch` names this batch's
    /// outbox (unique per submission batch). Returns the outbox: the tasks runnable now (the
    /// others wait for their parents, whose completion releases them).
    pub async fn add_tasks(
        &self,
        job: &str,
        job_max_retry: i32,
        priority: i32,
        batch: &str,
        tasks: &[TaskAddParameter],
    ) -> Result<Outbox> {
        let a = CreateTasks { job, job_max_retry, priority, now: now_ms(), tasks };
        let keys = self.keys.job(a.job);
        let outbox = keys.batch_outbox(batch);
        let mut inv = CREATE_TASKS.prepare();
        inv.key(keys.hash())
            .key(keys.tasks())
            .key(keys.part("queued"))
            .key(keys.part("wait"))
            .key(keys.part("blocked"))
            .key(keys.part("parents"))
            .key(&outbox)
            .key(keys.part("outboxes"))
            .key(keys.part("deleted"));
        for t in a.tasks {
            inv.key(keys.task(&t.id));
        }
        inv.arg(a.now);
        for t in a.tasks {
            let mut record = TaskRecord::new(t, a.job_max_retry, a.now);
            record.spec = self.sealed(record.spec, &format!("task {:?}", t.id))?;
            if let Some(signer) = self.signer() {
                record.sign(signer, a.job, &t.id);
            }
            let message =
                TaskMessage { sig: record.msig.clone(), ..TaskMessage::for_task(a.job, t).with_priority(a.priority) };
            let record = record.encode(&t.id)?;
            let parents = t.parent_ids()?;
            inv.arg(&t.id).arg(record).arg(t.slots()).arg(message.to_bytes());
            inv.arg(parents.len()).arg(parents);
        }
        let reply = CREATE_TASKS.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(Outbox::new(&keys, outbox, reply.from(0))),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "jobstate" => {
                Err(Error::State(format!("job {job:?} is {}: tasks can only be added to an active job", reply.at(0)?)))
            }
            "dup" => Err(Error::invalid(format!("task {:?} already exists in job {job:?}", reply.at(0)?))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Puts the messages of those of `ids` that are active and runnable (and signed, when the
    /// account signs) in an outbox named `@<tag>` (unique per call), for an operator who decides
    /// they should run again: publish it with `queue::Publisher::publish_outbox`. Idempotent: a
    /// task runs once however many of its messages are queued.
    pub async fn requeue_tasks(&self, job: &str, ids: &[&str], tag: &str) -> Result<Outbox> {
        let a = RequeueTasks { job, ids };
        let keys = self.keys.job(a.job);
        let outbox = keys.batch_outbox(tag);
        let mut inv = REQUEUE_TASKS.prepare();
        inv.key(keys.hash())
            .key(keys.part("wait"))
            .key(keys.part("blocked"))
            .key(keys.part("parkedmsg"))
            .key(&outbox)
            .key(keys.part("outboxes"))
            .key(keys.part("queued"));
        for id in a.ids {
            inv.key(keys.task(id));
        }
        inv.arg(a.job).arg(flag(self.signer().is_some())).arg(a.ids);
        let reply = REQUEUE_TASKS.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(Outbox::new(&keys, outbox, reply.from(0))),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "jobstate" => Err(Error::State(format!("job {job:?} is {}: only an active job's tasks run", reply.at(0)?))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Up to `limit` of `job`'s runnable active tasks that have been queued longer than `after`
    /// (their message should have been taken long since); none while the job has outboxes not
    /// yet published (their messages are on the way, or the outbox sweep publishes them).
    pub async fn queued_since(&self, job: &str, after: std::time::Duration, limit: usize) -> Result<Vec<String>> {
        let keys = self.keys.job(job);
        let before = now_ms().saturating_sub(after.as_millis() as i64);
        let (outboxes, queued): (u64, Vec<String>) = redis::pipe()
            .cmd("ZCARD")
            .arg(keys.part("outboxes"))
            .cmd("ZRANGEBYSCORE")
            .arg(keys.part("queued"))
            .arg("-inf")
            .arg(before)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.con())
            .await?;
        Ok(if outboxes > 0 { vec![] } else { queued })
    }

    /// Up to `count` of `job`'s task ids from position `start`, in the order they were added.
    pub async fn task_ids(&self, job: &str, start: usize, count: usize) -> Result<Vec<String>> {
        if count == 0 {
            return Ok(vec![]);
        }
        let (first, last) = (start as isize, (start + count - 1) as isize);
        Ok(redis::cmd("LRANGE")
            .arg(self.keys.job(job).tasks())
            .arg(first)
            .arg(last)
            .query_async(&mut self.con())
            .await?)
    }

    /// Changes a task's spec with `change` (Azure's task update: its constraints), in one
    /// transition fenced by the record it was made from; the new retry count counts from now
    /// on, a running attempt keeps the limits it started with.
    pub async fn update_task(
        &self,
        job: &str,
        task: &str,
        mut change: impl FnMut(&TaskAddParameter) -> Result<TaskAddParameter>,
    ) -> Result<()> {
        let key = self.keys.job(job).task(task);
        for _ in 0..5 {
            let raw = self.stored_record(job, task).await?;
            let mut record = TaskRecord::decode(task, &raw)?;
            let new = change(&stored_spec(task, &record.spec)?)?;
            if new.id != task {
                return Err(Error::invalid(format!("id {:?}: a task's id cannot change", new.id)));
            }
            new.validate()?;
            let job_max_retry: Option<i32> =
                redis::cmd("HGET").arg(self.keys.job(job).hash()).arg("maxRetry").query_async(&mut self.con()).await?;
            record.max_retry =
                new.constraints.as_ref().and_then(|c| c.max_task_retry_count).unwrap_or(job_max_retry.unwrap_or(0));
            record.spec = self.sealed(spec_without_id(&new), &format!("task {task:?}"))?;
            if let Some(signer) = self.signer() {
                record.sign(signer, job, task);
            }
            let mut inv = REPLACE_RECORD.prepare();
            inv.key(&key).arg(&raw).arg(record.encode(task)?);
            let reply = REPLACE_RECORD.run(inv, &mut self.con()).await?;
            match reply.head.as_str() {
                "ok" => return Ok(()),
                "stale" => continue,
                "gone" => return Err(Error::NotFound { kind: "task", id: task.into() }),
                _ => return Err(reply.unexpected()),
            }
        }
        Err(Error::State(format!("task {task:?} kept changing while it was updated; try again")))
    }

    /// Of `ids`, those that already exist in `job` (one pipelined round trip).
    pub async fn existing_tasks<'a>(&self, job: &str, ids: &[&'a str]) -> Result<Vec<&'a str>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(self.keys.job(job).task(id));
        }
        let found: Vec<bool> = pipe.query_async(&mut self.con()).await?;
        Ok(ids.iter().zip(found).filter(|(_, f)| *f).map(|(id, _)| *id).collect())
    }

    /// Terminates a task (`drover task terminate`): see [`Termination`]. `spec_blocks` says
    /// whether a termination blocks the task's dependents (its exit conditions).
    pub async fn terminate_task(&self, job: &str, task: &str, spec_blocks: bool) -> Result<Termination> {
        let pool = self.job_pool(job).await?;
        let failure = serde_json::to_string(&terminated_failure("drover task terminate"))
            .map_err(|e| Error::Internal(format!("failureInfo: {e}")))?;
        let a = TerminateTask { pool: &pool, job, task, now: now_ms(), failure, blocks: spec_blocks };
        let mut inv = TERMINATE_TASK.prepare();
        for key in self.keys.task_transition(a.pool, a.job, a.task) {
            inv.key(key);
        }
        inv.arg(a.now).arg(a.task).arg(self.keys.node_prefix()).arg(a.failure).arg(flag(a.blocks));
        let reply = TERMINATE_TASK.run(inv, &mut self.con()).await?;
        Ok(match reply.head.as_str() {
            "ok" => {
                let keys = self.keys.job(job);
                Termination::Terminated(Outbox::new(&keys, keys.outbox(task), reply.from(0)))
            }
            "killing" => Termination::Killing(reply.at(0)?.to_string()),
            "completed" => Termination::AlreadyCompleted,
            "notask" => return Err(Error::NotFound { kind: "task", id: task.into() }),
            _ => return Err(reply.unexpected()),
        })
    }

    /// Deletes a task that no live node runs and no task waits on (Azure's task delete): see
    /// `delete_task.lua`. Returns the outbox to publish (a parked task its end freed).
    pub async fn delete_task(&self, job: &str, task: &str) -> Result<Outbox> {
        let pool = self.job_pool(job).await?;
        let mut inv = DELETE_TASK.prepare();
        for key in self.keys.task_transition(&pool, job, task) {
            inv.key(key);
        }
        inv.key(self.keys.job(job).part("deleted"));
        inv.arg(now_ms()).arg(task).arg(self.keys.node_prefix());
        let reply = DELETE_TASK.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => {
                let keys = self.keys.job(job);
                Ok(Outbox::new(&keys, keys.outbox(task), reply.from(0)))
            }
            "notask" => Err(Error::NotFound { kind: "task", id: task.into() }),
            "running" => Err(Error::State(format!(
                "task {task:?} of job {job:?} runs on node {:?}: terminate it before deleting it",
                reply.at(0)?
            ))),
            "parent" => Err(Error::State(format!(
                "tasks of job {job:?} wait for task {task:?}: terminate it (which releases or blocks them) before deleting it"
            ))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Makes a task that completed with a failure active again, its retry count reset (Azure's
    /// task reactivate). Returns the outbox holding its message: publish it.
    pub async fn reactivate_task(&self, job: &str, task: &str) -> Result<Outbox> {
        let pool = self.job_pool(job).await?;
        let mut inv = REACTIVATE_TASK.prepare();
        for key in self.keys.task_transition(&pool, job, task) {
            inv.key(key);
        }
        inv.arg(now_ms()).arg(job).arg(task);
        let reply = REACTIVATE_TASK.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => {
                let keys = self.keys.job(job);
                Ok(Outbox::new(&keys, keys.outbox(task), reply.from(0)))
            }
            "notask" => Err(Error::NotFound { kind: "task", id: task.into() }),
            "jobstate" => Err(Error::State(format!(
                "job {job:?} is {}: only an active job's tasks can be reactivated",
                reply.at(0)?
            ))),
            "state" => Err(Error::State(format!(
                "task {task:?} of job {job:?} is {}: only a task that completed with a failure can be reactivated",
                reply.at(0)?
            ))),
            "succeeded" => Err(Error::State(format!(
                "task {task:?} of job {job:?} succeeded: only a task that completed with a failure can be reactivated"
            ))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Whether the attempt still owns the task (checked before uploading outputs, so a stale
    /// attempt does not overwrite the files of a newer one).
    pub async fn owns(&self, at: super::AttemptRef<'_>) -> Result<bool> {
        match self.task_record(at.job, at.task).await {
            Ok(r) => Ok(r.attempt == at.attempt && matches!(r.state, TaskState::Preparing | TaskState::Running)),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The stored record of a task.
    pub async fn task_record(&self, job: &str, task: &str) -> Result<TaskRecord> {
        TaskRecord::decode(task, &self.stored_record(job, task).await?)
    }

    /// A task's record as stored (see [`TaskRecord::decode`]).
    async fn stored_record(&self, job: &str, task: &str) -> Result<Vec<u8>> {
        let raw: Option<Vec<u8>> =
            redis::cmd("GET").arg(self.keys.job(job).task(task)).query_async(&mut self.con()).await?;
        raw.ok_or_else(|| Error::NotFound { kind: "task", id: task.into() })
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
    /// reading the records in pages, until `each` breaks.
    pub async fn for_each_task(
        &self,
        job: &str,
        state: Option<TaskState>,
        mut each: impl FnMut(CloudTask) -> ControlFlow<()>,
    ) -> Result<()> {
        self.for_each_task_from(job, state, 0, |_, task| each(task)).await
    }

    /// [`StatusStore::for_each_task`] from the `from`-th task added (0 is the first), giving
    /// `each` every task's position too: a page deep in a job costs what the first does.
    pub async fn for_each_task_from(
        &self,
        job: &str,
        state: Option<TaskState>,
        from: usize,
        mut each: impl FnMut(usize, CloudTask) -> ControlFlow<()>,
    ) -> Result<()> {
        let pool = self.job_pool(job).await?;
        let mut dirs = NodeDirs::default();
        const PAGE: isize = 1000;
        let mut start = isize::try_from(from).unwrap_or(isize::MAX);
        loop {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(self.keys.job(job).tasks())
                .arg(start)
                .arg(start + PAGE - 1)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                return Ok(());
            }
            let keys: Vec<String> = ids.iter().map(|id| self.keys.job(job).task(id)).collect();
            let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.con()).await?;
            for (n, (id, raw)) in ids.iter().zip(raws).enumerate() {
                let Some(raw) = raw else { continue };
                let record = TaskRecord::decode(id, &raw)?;
                if state.is_none_or(|s| s == record.state) {
                    let root = self.task_root(&mut dirs, &record, job, id).await?;
                    let index = usize::try_from(start).unwrap_or(0) + n;
                    if each(index, record.to_cloud_task(id, &pool, root)?).is_break() {
                        return Ok(());
                    }
                }
            }
            start += PAGE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (field, stored name) pairs of `lua/includes/record.lua`'s table constructor that
    /// starts with `opening`, each pair read with `pair` (None if it is not one).
    fn lua_names(opening: &str, pair: fn(&str, &str) -> Option<(String, String)>) -> Vec<(String, String)> {
        let lua = include_str!("lua/includes/record.lua");
        let table = lua.split(opening).nth(1).and_then(|t| t.split('}').next()).unwrap_or_default();
        let pairs: Vec<_> = table.split(',').filter(|p| !p.trim().is_empty()).collect();
        let names: Vec<_> =
            pairs.iter().filter_map(|p| p.split_once('=').and_then(|(l, r)| pair(l.trim(), r.trim()))).collect();
        assert_eq!(names.len(), pairs.len(), "every entry of the table that starts with {opening:?} reads");
        names
    }

    /// A field as record.lua names it: `stime`, or `['end']` for a Lua keyword.
    fn lua_field(name: &str) -> String {
        name.trim_start_matches("['").trim_end_matches("']").to_string()
    }

    #[test]
    fn the_scripts_store_each_field_under_the_name_decode_reads() {
        let names: Vec<(String, String)> = STORED_NAMES.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect();
        // load_record: `field = s.<stored>`; store_record: `<stored> = keep(r.field)` or
        // `rel(r.field)`.
        let loaded =
            lua_names("    r = {", |field, stored| Some((lua_field(field), stored.strip_prefix("s.")?.to_string())));
        assert_eq!(loaded, names, "load_record");
        let stored = lua_names("  local s = {", |stored, field| {
            let field = field.strip_prefix("keep(r").or_else(|| field.strip_prefix("rel(r"))?.strip_suffix(')')?;
            Some((lua_field(field.trim_start_matches('.')), stored.to_string()))
        });
        assert_eq!(stored, names, "store_record");
        // Every field at a value other than its default, under its own name (JSON) and under its
        // stored name after the mark (MessagePack, times relative to ctime), reads the same.
        // A struct literal names every field: one added to TaskRecord must be added here, and
        // so needs a stored name.
        let record = TaskRecord {
            spec: r#"{"commandLine":"x"}"#.into(),
            state: TaskState::Completed,
            prev: Some(TaskState::Preparing),
            ctime: 1_000_000,
            stime: 1_000_500,
            start: Some(1_000_100),
            end: Some(1_000_400),
            exit: Some(3),
            retry: 1,
            requeue: 2,
            lost: 1,
            result: Some(TaskResult::Failure),
            fail: Some(FailureInfo::user(FailureCode::FailureExitCode, "m")),
            node: Some("n1".into()),
            attempt: 4,
            slots: 2,
            max_retry: 5,
            dblk: 1,
            stg: 1,
            sig: Some("s1".into()),
            msig: Some("s2".into()),
        };
        let whole = serde_json::to_value(&record).expect("JSON");
        let serde_json::Value::Object(fields) = &whole else { panic!("an object") };
        assert_eq!(fields.len(), STORED_NAMES.len());
        let stored: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(field, value)| {
                let (_, name) = STORED_NAMES.iter().find(|(f, _)| f == field).expect("every field has a stored name");
                let value = match field.as_str() {
                    "stime" | "start" | "end" => serde_json::json!(value.as_i64().unwrap_or_default() - 1_000_000),
                    _ => value.clone(),
                };
                (name.to_string(), value)
            })
            .collect();
        let mut packed = vec![STORED_MARK];
        packed.extend(rmp_serde::to_vec_named(&stored).expect("MessagePack"));
        assert_eq!(TaskRecord::decode("t", whole.to_string().as_bytes()).expect("JSON"), record);
        assert_eq!(TaskRecord::decode("t", &packed).expect("stored"), record);
        // What encode stores is that, and reads back whole; so does a completed task's record
        // without what completion implies, and a task's record as it is added.
        assert_eq!(record.encode("t").expect("encode"), packed);
        let implied = TaskRecord {
            prev: Some(TaskState::Running),
            end: Some(record.stime),
            result: Some(TaskResult::Success),
            fail: None,
            ..record.clone()
        };
        let added = TaskRecord::new(&serde_json::from_str(r#"{"id":"t","commandLine":"x"}"#).expect("a task"), 0, 5);
        let names = |r: &TaskRecord| -> Vec<String> {
            let stored = r.encode("t").expect("encode");
            assert_eq!(stored.first(), Some(&STORED_MARK));
            assert_eq!(&TaskRecord::decode("t", &stored).expect("stored"), r);
            let map: serde_json::Map<String, serde_json::Value> = rmp_serde::from_slice(&stored[1..]).expect("a map");
            map.into_iter().map(|(name, _)| name).collect()
        };
        assert_eq!(names(&implied).len(), STORED_NAMES.len() - 4, "no end, prev, result or fail");
        assert_eq!(names(&added), ["a", "c", "p", "s", "t"]);
    }
}
