//! Job records: create, read, count, terminate, delete.

use super::flag;
use super::scripts::{CREATE_JOB, DISABLE_JOB, ENABLE_JOB, RECORD_JOB_TASK_RUN, TERMINATE_JOB, UPDATE_JOB};
use super::Outbox;
use super::StatusStore;
use crate::model::job::DisableTasks;
use crate::model::job::Statistics;
use crate::model::job::{
    DependencyReport, HeldTask, JobExecutionInfo, JobProgress, OnAllTasksComplete, TaskCounts, TaskCountsResult,
};
use crate::model::{now_ms, rfc3339, CloudJob, JobAddParameter, JobState};
use crate::signing::Kind;
use crate::{Error, Result};

/// A job's counters as one read gives them ([`StatusStore::job_backlogs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobBacklog {
    pub active: u64,
    pub running: u64,
    pub active_slots: u64,
    pub running_slots: u64,
    pub completed: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Active tasks held by their dependencies (waiting, or blocked).
    pub held: u64,
}

/// What a node's watch found: see [`StatusStore::watch`].
#[derive(Debug, Default)]
pub struct Watch {
    /// Running (job, task) pairs to kill.
    pub kill: Vec<(String, String)>,
    /// Running (job, task) pairs to kill and hand back (their job was disabled with `requeue`).
    pub requeue: Vec<(String, String)>,
    /// Jobs that ended.
    pub ended: Vec<String>,
}
use std::collections::HashMap;

impl StatusStore {
    /// Creates `job` on its pool; refuses an unknown pool or an existing job id.
    pub async fn create_job(&self, job: &JobAddParameter) -> Result<()> {
        job.validate()?;
        let mut inv = CREATE_JOB.prepare();
        self.new_job(&mut inv, job, now_ms())?;
        let reply = CREATE_JOB.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(()),
            "nopool" => Err(Error::NotFound { kind: "pool", id: job.pool_info.pool_id.clone() }),
            "dup" => Err(Error::Conflict { kind: "job", id: job.id.clone() }),
            _ => Err(reply.unexpected()),
        }
    }

    /// Adds to `inv` the keys and arguments of `includes/new_job.lua` for `job`, made at `now`.
    pub(super) fn new_job(&self, inv: &mut redis::ScriptInvocation<'_>, job: &JobAddParameter, now: i64) -> Result<()> {
        let pool = &job.pool_info.pool_id;
        let spec = serde_json::to_string(job).map_err(|e| Error::Internal(format!("job {:?}: {e}", job.id)))?;
        let spec = self.sealed(spec, &format!("job {:?}", job.id))?;
        let sig = self.signer().map(|s| s.sign(Kind::Job, &[&job.id, &spec])).unwrap_or_default();
        inv.key(self.keys.job(&job.id).hash())
            .key(self.keys.jobs())
            .key(self.keys.pool(pool))
            .key(self.keys.pool_part(pool, "jobs"))
            .arg(&job.id)
            .arg(&spec)
            .arg(now)
            .arg(job.max_task_retry_count())
            .arg(pool)
            .arg(flag(job.performs_exit_actions()))
            .arg(flag(job.uses_task_dependencies == Some(true)))
            .arg(flag(job.on_all_tasks_complete == Some(OnAllTasksComplete::TerminateJob)))
            .arg(job.max_parallel_tasks.filter(|n| *n > 0).unwrap_or(0))
            .arg(job.priority.unwrap_or(0))
            .arg(job.deadline_ms(now).unwrap_or(0))
            .arg(sig)
            .arg(job.job_manager_task.as_ref().filter(|m| m.kills_job()).map_or("", |m| m.id.as_str()));
        Ok(())
    }

    async fn job_fields(&self, job: &str) -> Result<HashMap<String, String>> {
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.keys.job(job).hash()).query_async(&mut self.con()).await?;
        if fields.is_empty() {
            return Err(Error::NotFound { kind: "job", id: job.into() });
        }
        Ok(fields)
    }

    /// The pool a job runs on.
    pub async fn job_pool(&self, job: &str) -> Result<String> {
        let pool: Option<String> =
            redis::cmd("HGET").arg(self.keys.job(job).hash()).arg("pool").query_async(&mut self.con()).await?;
        pool.ok_or_else(|| Error::NotFound { kind: "job", id: job.into() })
    }

    /// The job's spec and its state (Azure's CloudJob).
    pub async fn get_job(&self, job: &str) -> Result<CloudJob> {
        self.read_job(job, false).await
    }

    /// The job as a node may act on it: its spec verifies against the account's signing keys
    /// (when it has them) and is valid, else [`Error::Refused`].
    pub async fn get_job_checked(&self, job: &str) -> Result<CloudJob> {
        self.read_job(job, true).await
    }

    async fn read_job(&self, job: &str, checked: bool) -> Result<CloudJob> {
        let f = self.job_fields(job).await?;
        let text = f.get("spec").map_or("", String::as_str);
        let refused = |e: String| Error::Refused(format!("job {job:?}'s record was refused: {e}"));
        if let Some(signer) = self.signer().filter(|_| checked) {
            signer.verify(Kind::Job, &[job, text], f.get("sig").map(String::as_str)).map_err(refused)?;
        }
        let spec: JobAddParameter =
            serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored job {job:?} is unreadable: {e}")))?;
        if checked {
            spec.validate().map_err(|e| refused(e.to_string()))?;
        }
        let ms = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        let count = |k: &str| ms(k).unwrap_or(0).to_string();
        let stats = Statistics {
            num_succeeded_tasks: Some(count("succeeded")),
            num_failed_tasks: Some(count("failed")),
            num_task_retries: Some(count("retries")),
            ..Statistics::new(
                ms("ctime").unwrap_or(0),
                ms("end").unwrap_or_else(crate::model::now_ms),
                ms("wall").unwrap_or(0),
                ms("wait").unwrap_or(0),
            )
        };
        Ok(CloudJob {
            spec,
            state: f.get("state").and_then(|s| JobState::parse(s)).unwrap_or(JobState::Active),
            creation_time: rfc3339(ms("ctime").unwrap_or(0)),
            state_transition_time: rfc3339(ms("stime").unwrap_or(0)),
            execution_info: JobExecutionInfo {
                start_time: rfc3339(ms("ctime").unwrap_or(0)),
                end_time: ms("end").map(rfc3339),
                terminate_reason: f.get("reason").cloned(),
            },
            dependencies: None,
            stats,
        })
    }

    /// Changes an active job's spec with `change` (Azure's job update and patch): its priority,
    /// maxParallelTasks, onAllTasksComplete, constraints and metadata take effect for what
    /// happens next (tasks added later get its new retry count); its pool stays.
    pub async fn update_job(
        &self,
        job: &str,
        mut change: impl FnMut(&JobAddParameter) -> Result<JobAddParameter>,
    ) -> Result<()> {
        for _ in 0..5 {
            let f = self.job_fields(job).await?;
            let old = f.get("spec").map_or("", String::as_str);
            let current: JobAddParameter = serde_json::from_str(old)
                .map_err(|e| Error::Corrupt(format!("stored job {job:?} is unreadable: {e}")))?;
            let new = change(&current)?;
            if new.pool_info != current.pool_info || new.id != current.id {
                return Err(Error::invalid(format!(
                    "job {job:?}: poolInfo cannot change (drover does not disable jobs)"
                )));
            }
            new.validate()?;
            let created = f.get("ctime").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let spec = serde_json::to_string(&new).map_err(|e| Error::Internal(format!("job {job:?}: {e}")))?;
            let spec = self.sealed(spec, &format!("job {job:?}"))?;
            let sig = self.signer().map(|s| s.sign(Kind::Job, &[job, &spec])).unwrap_or_default();
            let mut inv = UPDATE_JOB.prepare();
            inv.key(self.keys.job(job).hash())
                .arg(old)
                .arg(&spec)
                .arg(sig)
                .arg(new.priority.unwrap_or(0))
                .arg(new.max_parallel_tasks.filter(|n| *n > 0).unwrap_or(0))
                .arg(flag(new.on_all_tasks_complete == Some(OnAllTasksComplete::TerminateJob)))
                .arg(new.max_task_retry_count())
                .arg(new.deadline_ms(created).unwrap_or(0));
            let reply = UPDATE_JOB.run(inv, &mut self.con()).await?;
            match reply.head.as_str() {
                "ok" => return Ok(()),
                "stale" => continue,
                "nojob" => return Err(Error::NotFound { kind: "job", id: job.into() }),
                "state" => {
                    let state = reply.rest.first().map_or("", String::as_str);
                    return Err(Error::State(format!("job {job:?} is {state}: only an active job can be changed")));
                }
                _ => return Err(reply.unexpected()),
            }
        }
        Err(Error::State(format!("job {job:?} kept changing while it was updated; try again")))
    }

    /// The ids of every job of the account, sorted.
    pub async fn job_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.jobs()).query_async(&mut self.con()).await?;
        ids.sort();
        Ok(ids)
    }

    /// Tasks and slots by state, read from counters the transitions keep (O(1)).
    pub async fn task_counts(&self, job: &str) -> Result<TaskCountsResult> {
        Ok(self.job_progress(job).await?.counts)
    }

    /// The job's state, its task counts and its held tasks, in one O(1) round trip (what
    /// `job wait` polls). A job past its `maxWallClockTime` is terminated here too, so an idle
    /// pool cannot keep it alive.
    pub async fn job_progress(&self, job: &str) -> Result<JobProgress> {
        let names = ["active", "running", "completed", "succeeded", "failed"];
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.job(job).hash()).arg("state").arg("deadline");
        for n in names {
            cmd.arg(n);
        }
        for n in names {
            cmd.arg(format!("s.{n}"));
        }
        let (raw, waiting, blocked): (Vec<Option<String>>, u64, u64) = redis::pipe()
            .atomic()
            .add_command(cmd)
            .cmd("HLEN")
            .arg(self.keys.job(job).part("wait"))
            .cmd("HLEN")
            .arg(self.keys.job(job).part("blocked"))
            .query_async(&mut self.con())
            .await?;
        let state =
            raw.first().and_then(|s| s.as_deref()).ok_or_else(|| Error::NotFound { kind: "job", id: job.into() })?;
        let mut state = JobState::parse(state).unwrap_or(JobState::Active);
        let deadline = raw.get(1).and_then(|d| d.as_deref()).and_then(|d| d.parse::<i64>().ok()).unwrap_or(0);
        if state == JobState::Active && deadline > 0 && now_ms() > deadline {
            state = match self.terminate_job(job, "MaxWallClockTimeExpiry").await {
                Ok(s) => s,
                Err(_) => JobState::Completed,
            };
        }
        let v: Vec<i64> = raw.iter().skip(2).map(|x| x.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)).collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        // `s.<state>` holds the slots beyond one of each task in the state (counters.lua).
        let slots = |i: usize| at(i) + at(i + 5);
        let counts = TaskCounts { active: at(0), running: at(1), completed: at(2), succeeded: at(3), failed: at(4) };
        let slot_counts = TaskCounts {
            active: slots(0),
            running: slots(1),
            completed: slots(2),
            succeeded: slots(3),
            failed: slots(4),
        };
        Ok(JobProgress {
            state,
            counts: TaskCountsResult { task_counts: counts, task_slot_counts: slot_counts },
            waiting,
            blocked,
        })
    }

    /// Ends an active job: no task of it starts again, and the nodes running its tasks kill them.
    /// Returns the job's new state (`terminating` until its running tasks have ended, then
    /// `completed`). Refuses a job that already ended.
    pub async fn terminate_job(&self, job: &str, reason: &str) -> Result<JobState> {
        let pool = self.job_pool(job).await?;
        let mut inv = TERMINATE_JOB.prepare();
        inv.key(self.keys.job(job).hash()).key(self.keys.pool_part(&pool, "jobs")).arg(now_ms()).arg(reason);
        let reply = TERMINATE_JOB.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => JobState::parse(reply.at(0)?).ok_or_else(|| reply.unexpected()),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "state" => {
                Err(Error::State(format!("job {job:?} is {}: only an active job can be terminated", reply.at(0)?)))
            }
            _ => Err(reply.unexpected()),
        }
    }

    /// Disables an active job (Azure's job disable): no task of it starts until it is enabled;
    /// the nodes running its tasks requeue them, terminate them or let them finish, as `tasks`
    /// says.
    pub async fn disable_job(&self, job: &str, tasks: DisableTasks) -> Result<()> {
        let mut inv = DISABLE_JOB.prepare();
        inv.key(self.keys.job(job).hash()).arg(tasks.as_str()).arg(now_ms());
        let reply = DISABLE_JOB.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(()),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "state" => Err(Error::State(format!(
                "job {job:?} is {}: only an active or disabled job can be disabled",
                reply.at(0)?
            ))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Enables a disabled job: it is active again, and the tasks that waited for it are in the
    /// returned outbox (named `@<tag>`, unique per call): publish it.
    pub async fn enable_job(&self, job: &str, tag: &str) -> Result<Outbox> {
        let keys = self.keys.job(job);
        let outbox = keys.batch_outbox(tag);
        let mut inv = ENABLE_JOB.prepare();
        inv.key(keys.hash())
            .key(keys.part("parked"))
            .key(keys.part("parkedmsg"))
            .key(&outbox)
            .key(keys.part("outboxes"))
            .arg(now_ms());
        let reply = ENABLE_JOB.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(Outbox::new(&keys, outbox, reply.from(0))),
            "nojob" => Err(Error::NotFound { kind: "job", id: job.into() }),
            "state" => {
                Err(Error::State(format!("job {job:?} is {}: only a disabled job can be enabled", reply.at(0)?)))
            }
            _ => Err(reply.unexpected()),
        }
    }

    /// Which tasks of a job wait on others and why: up to `limit` of them with the parents they
    /// wait for (and which of those are not in the job at all), the failed parent that blocks
    /// them, and any cycle among them. Reads only held tasks, never the whole job.
    pub async fn dependency_report(&self, job: &str, limit: usize) -> Result<Option<DependencyReport>> {
        let (waiting, blocked): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.job(job).part("wait"))
            .cmd("HGETALL")
            .arg(self.keys.job(job).part("blocked"))
            .query_async(&mut self.con())
            .await?;
        if waiting.is_empty() && blocked.is_empty() {
            return Ok(None);
        }
        let mut report = DependencyReport { waiting: waiting.len(), blocked: blocked.len(), ..Default::default() };
        let mut ids: Vec<&String> = blocked.keys().chain(waiting.keys()).collect();
        ids.sort();
        ids.truncate(limit);
        // Each held task's parents that have not completed (their dependent list still exists).
        let mut edges: HashMap<String, Vec<String>> = HashMap::new();
        for id in ids {
            if let Some(parent) = blocked.get(id) {
                report.tasks.push(HeldTask {
                    task_id: id.clone(),
                    blocked_by: Some(parent.clone()),
                    ..Default::default()
                });
                continue;
            }
            let record = match self.task_record(job, id).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            let parents = stored_parents(id, &record.spec);
            if parents.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for p in &parents {
                pipe.cmd("EXISTS").arg(self.keys.job(job).dependents(p)).cmd("EXISTS").arg(self.keys.job(job).task(p));
            }
            let found: Vec<bool> = pipe.query_async(&mut self.con()).await?;
            let mut held = HeldTask { task_id: id.clone(), ..Default::default() };
            for (p, f) in parents.iter().zip(found.chunks(2)) {
                if f.first() == Some(&true) {
                    held.waiting_on_count += 1;
                    if f.get(1) != Some(&true) {
                        held.missing.push(p.clone());
                    } else if held.waiting_on.len() < 20 {
                        held.waiting_on.push(p.clone());
                    }
                    if waiting.contains_key(p) {
                        edges.entry(id.clone()).or_default().push(p.clone());
                    }
                }
            }
            held.missing.truncate(20);
            report.tasks.push(held);
        }
        report.cycles = crate::model::task::dependency_cycles(&edges);
        Ok(Some(report))
    }

    /// What a node must act on, for the tasks it runs and the jobs it has seen (two round trips):
    /// the running tasks to kill (their job is no longer active, or they were terminated), to
    /// hand back (their job was disabled with `requeue`), and the jobs that ended (completed or
    /// deleted: their release task runs). A job past its `maxWallClockTime` is terminated on the
    /// way.
    pub async fn watch(&self, running: &[(String, String)], jobs: &[String]) -> Result<Watch> {
        let mut names: Vec<&str> =
            running.iter().map(|(j, _)| j.as_str()).chain(jobs.iter().map(String::as_str)).collect();
        names.sort_unstable();
        names.dedup();
        let mut pipe = redis::pipe();
        for j in &names {
            pipe.cmd("HMGET").arg(self.keys.job(j).hash()).arg("state").arg("deadline").arg("disableTasks");
        }
        let states: Vec<(Option<String>, Option<i64>, Option<String>)> = pipe.query_async(&mut self.con()).await?;
        let mut pipe = redis::pipe();
        for (j, t) in running {
            pipe.cmd("SISMEMBER").arg(self.keys.job(j).part("killed")).arg(t);
        }
        let killed: Vec<bool> = if running.is_empty() { vec![] } else { pipe.query_async(&mut self.con()).await? };
        let now = now_ms();
        let mut state_of: HashMap<&str, (Option<JobState>, Option<DisableTasks>)> = HashMap::new();
        for (j, (state, deadline, disable)) in names.iter().zip(states) {
            let mut state = state.as_deref().and_then(JobState::parse);
            if state == Some(JobState::Active) && deadline.is_some_and(|d| d > 0 && now > d) {
                state = Some(self.terminate_job(j, "MaxWallClockTimeExpiry").await.unwrap_or(JobState::Completed));
            }
            state_of.insert(j, (state, disable.as_deref().and_then(DisableTasks::parse)));
        }
        let mut watch = Watch::default();
        for ((j, t), killed) in running.iter().zip(killed) {
            let key = (j.clone(), t.clone());
            match state_of.get(j.as_str()).copied().unwrap_or_default() {
                _ if killed => watch.kill.push(key),
                (Some(JobState::Active), _) => {}
                (Some(JobState::Disabled), Some(DisableTasks::Wait)) => {}
                (Some(JobState::Disabled), Some(DisableTasks::Requeue)) => watch.requeue.push(key),
                _ => watch.kill.push(key),
            }
        }
        watch.ended = jobs
            .iter()
            .filter(|j| {
                matches!(
                    state_of.get(j.as_str()).map(|s| s.0),
                    None | Some(None | Some(JobState::Completed | JobState::Deleting))
                )
            })
            .cloned()
            .collect();
        Ok(watch)
    }

    /// The active jobs of a pool.
    pub async fn pool_jobs(&self, pool: &str) -> Result<Vec<String>> {
        Ok(redis::cmd("SMEMBERS").arg(self.keys.pool_part(pool, "jobs")).query_async(&mut self.con()).await?)
    }

    /// For each job, its counters, in one round trip.
    pub async fn job_backlogs(&self, jobs: &[String]) -> Result<Vec<JobBacklog>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        const FIELDS: [&str; 7] = ["active", "running", "s.active", "s.running", "completed", "succeeded", "failed"];
        let mut pipe = redis::pipe();
        for j in jobs {
            pipe.cmd("HMGET").arg(self.keys.job(j).hash()).arg(&FIELDS[..]);
            pipe.cmd("HLEN").arg(self.keys.job(j).part("wait"));
            pipe.cmd("HLEN").arg(self.keys.job(j).part("blocked"));
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut self.con()).await?;
        let num = |v: &redis::Value| -> u64 {
            redis::from_redis_value::<Option<i64>>(v.clone()).ok().flatten().unwrap_or(0).max(0) as u64
        };
        Ok(values
            .chunks(3)
            .map(|c| {
                let counters: Vec<Option<i64>> =
                    c.first().and_then(|v| redis::from_redis_value(v.clone()).ok()).unwrap_or_default();
                let at = |i: usize| counters.get(i).copied().flatten().unwrap_or(0).max(0) as u64;
                JobBacklog {
                    active: at(0),
                    running: at(1),
                    // The slots beyond one of each task, plus one per task (counters.lua).
                    active_slots: at(0) + at(2),
                    running_slots: at(1) + at(3),
                    completed: at(4),
                    succeeded: at(5),
                    failed: at(6),
                    held: c.get(1).map_or(0, num) + c.get(2).map_or(0, num),
                }
            })
            .collect())
    }

    /// Records a node's job preparation or release run (`field` names which) in the job's
    /// per-node status, unless the job is gone.
    pub async fn record_node_job_task(
        &self,
        job: &str,
        node: &str,
        pool: &str,
        field: &str,
        info: serde_json::Value,
    ) -> Result<()> {
        let mut inv = RECORD_JOB_TASK_RUN.prepare();
        inv.key(self.keys.job(job).hash())
            .key(self.keys.job(job).part("nodes"))
            .arg(node)
            .arg(pool)
            .arg(field)
            .arg(info.to_string());
        let reply = RECORD_JOB_TASK_RUN.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" | "nojob" => {}
            _ => return Err(reply.unexpected()),
        }
        Ok(())
    }

    /// The job's preparation and release runs, one entry per node (Azure's
    /// JobPreparationAndReleaseTaskExecutionInformation), sorted by node.
    pub async fn prep_release_status(&self, job: &str) -> Result<Vec<serde_json::Value>> {
        self.job_pool(job).await?;
        let raw: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.keys.job(job).part("nodes")).query_async(&mut self.con()).await?;
        let mut nodes: Vec<(String, String)> = raw.into_iter().collect();
        nodes.sort();
        Ok(nodes.into_iter().filter_map(|(_, v)| serde_json::from_str(&v).ok()).collect())
    }

    /// Deletes a job and every task record of it. Messages still queued for it are dropped by
    /// the node that receives them (their task is gone).
    pub async fn delete_job(&self, job: &str) -> Result<()> {
        let pool = self.job_pool(job).await?;
        let _: () =
            redis::cmd("SREM").arg(self.keys.pool_part(&pool, "jobs")).arg(job).query_async(&mut self.con()).await?;
        let _: () = redis::cmd("HSET")
            .arg(self.keys.job(job).hash())
            .arg("state")
            .arg("deleting")
            .query_async(&mut self.con())
            .await?;
        const PAGE: isize = 1000;
        loop {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(self.keys.job(job).tasks())
                .arg(0)
                .arg(PAGE - 1)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                break;
            }
            let keys: Vec<String> = ids
                .iter()
                .flat_map(|id| {
                    [self.keys.job(job).task(id), self.keys.job(job).outbox(id), self.keys.job(job).dependents(id)]
                })
                .collect();
            let _: () = redis::pipe()
                .atomic()
                .cmd("UNLINK")
                .arg(&keys)
                .ignore()
                .cmd("LTRIM")
                .arg(self.keys.job(job).tasks())
                .arg(ids.len())
                .arg(-1)
                .ignore()
                .query_async(&mut self.con())
                .await?;
        }
        // Lists of dependents waiting on ids that never arrived.
        loop {
            let parents: Vec<String> = redis::cmd("SPOP")
                .arg(self.keys.job(job).part("parents"))
                .arg(1000)
                .query_async(&mut self.con())
                .await?;
            if parents.is_empty() {
                break;
            }
            let keys: Vec<String> = parents.iter().map(|p| self.keys.job(job).dependents(p)).collect();
            let _: () = redis::cmd("UNLINK").arg(keys).query_async(&mut self.con()).await?;
        }
        let outboxes: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.job(job).part("outboxes"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        let parts = ["wait", "blocked", "parked", "parkedmsg", "killed", "nodes", "queued", "outboxes", "deleted"]
            .map(|p| self.keys.job(job).part(p));
        let _: () = redis::pipe()
            .atomic()
            .cmd("UNLINK")
            .arg(&parts)
            .arg(&outboxes)
            .arg(self.keys.job(job).hash())
            .arg(self.keys.job(job).tasks())
            .ignore()
            .cmd("SREM")
            .arg(self.keys.jobs())
            .arg(job)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }
}

/// The parents a stored task spec names (the spec is stored without its id).
fn stored_parents(id: &str, spec: &str) -> Vec<String> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(spec).unwrap_or_default();
    map.insert("id".into(), id.into());
    serde_json::from_value::<crate::model::TaskAddParameter>(map.into())
        .ok()
        .and_then(|t| t.parent_ids().ok())
        .unwrap_or_default()
}
