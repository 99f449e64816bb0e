//! Job records: create, read, count, terminate, delete.

use super::scripts::{CREATE_JOB, TERMINATE_JOB};
use super::StatusStore;
use crate::model::job::{JobExecutionInfo, TaskCounts, TaskCountsResult};
use crate::model::{now_ms, rfc3339, CloudJob, JobAddParameter, JobState};
use crate::{Error, Result};
use std::collections::HashMap;

impl StatusStore {
    /// Creates `job` on its pool; refuses an unknown pool or an existing job id.
    pub async fn create_job(&self, job: &JobAddParameter) -> Result<()> {
        job.validate()?;
        let env = serde_json::to_string(&job.common_environment_settings).unwrap_or_default();
        let values: Vec<String> = CREATE_JOB
            .script
            .key(self.keys.job(&job.id))
            .key(self.keys.jobs())
            .key(self.keys.pool(&job.pool_info.pool_id))
            .arg(&job.id)
            .arg(serde_json::to_string(job).unwrap_or_default())
            .arg(now_ms())
            .arg(env)
            .arg(job.max_task_retry_count())
            .arg(&job.pool_info.pool_id)
            .arg(if job.performs_exit_actions() { "1" } else { "0" })
            .invoke_async(&mut self.con())
            .await?;
        match values.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("nopool") => Err(Error::NotFound { kind: "pool", id: job.pool_info.pool_id.clone() }),
            _ => Err(Error::Conflict { kind: "job", id: job.id.clone() }),
        }
    }

    async fn job_fields(&self, job: &str) -> Result<HashMap<String, String>> {
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.keys.job(job)).query_async(&mut self.con()).await?;
        if fields.is_empty() {
            return Err(Error::NotFound { kind: "job", id: job.into() });
        }
        Ok(fields)
    }

    /// The pool a job runs on.
    pub(super) async fn job_pool(&self, job: &str) -> Result<String> {
        let pool: Option<String> =
            redis::cmd("HGET").arg(self.keys.job(job)).arg("pool").query_async(&mut self.con()).await?;
        pool.ok_or_else(|| Error::NotFound { kind: "job", id: job.into() })
    }

    /// The job's spec and its state (Azure's CloudJob).
    pub async fn get_job(&self, job: &str) -> Result<CloudJob> {
        let f = self.job_fields(job).await?;
        let spec: JobAddParameter = serde_json::from_str(f.get("spec").map_or("", String::as_str))
            .map_err(|e| Error::State(format!("stored job {job:?} is unreadable: {e}")))?;
        let ms = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
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
        })
    }

    /// The ids of every job of the account, sorted.
    pub async fn job_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.jobs()).query_async(&mut self.con()).await?;
        ids.sort();
        Ok(ids)
    }

    /// Tasks and slots by state, read from counters the transitions keep (O(1)).
    pub async fn task_counts(&self, job: &str) -> Result<TaskCountsResult> {
        Ok(self.job_progress(job).await?.1)
    }

    /// The job's state and its task counts, in one O(1) read (what `job wait` polls).
    pub async fn job_progress(&self, job: &str) -> Result<(JobState, TaskCountsResult)> {
        let names = ["active", "running", "completed", "succeeded", "failed"];
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.job(job)).arg("state");
        for n in names {
            cmd.arg(n);
        }
        for n in names {
            cmd.arg(format!("s.{n}"));
        }
        let raw: Vec<Option<String>> = cmd.query_async(&mut self.con()).await?;
        let state =
            raw.first().and_then(|s| s.as_deref()).ok_or_else(|| Error::NotFound { kind: "job", id: job.into() })?;
        let state = JobState::parse(state).unwrap_or(JobState::Active);
        let v: Vec<i64> = raw.iter().skip(1).map(|x| x.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)).collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        let counts = |o: usize| TaskCounts {
            active: at(o),
            running: at(o + 1),
            completed: at(o + 2),
            succeeded: at(o + 3),
            failed: at(o + 4),
        };
        Ok((state, TaskCountsResult { task_counts: counts(0), task_slot_counts: counts(5) }))
    }

    /// Ends an active job: no task of it starts again. Refuses a job that already ended.
    pub async fn terminate_job(&self, job: &str, reason: &str) -> Result<()> {
        let values: Vec<String> = TERMINATE_JOB
            .script
            .key(self.keys.job(job))
            .arg(now_ms())
            .arg(reason)
            .invoke_async(&mut self.con())
            .await?;
        match values.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("nojob") => Err(Error::NotFound { kind: "job", id: job.into() }),
            _ => Err(Error::State(format!(
                "job {job:?} is {}: only an active job can be terminated",
                values.get(1).map_or("", String::as_str)
            ))),
        }
    }

    /// Deletes a job and every task record of it. Messages still queued for it are dropped by
    /// the node that receives them (their task is gone).
    pub async fn delete_job(&self, job: &str) -> Result<()> {
        self.job_pool(job).await?;
        let _: () = redis::cmd("HSET")
            .arg(self.keys.job(job))
            .arg("state")
            .arg("deleting")
            .query_async(&mut self.con())
            .await?;
        const PAGE: isize = 1000;
        loop {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(self.keys.job_tasks(job))
                .arg(0)
                .arg(PAGE - 1)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                break;
            }
            let keys: Vec<String> = ids.iter().map(|id| self.keys.task(job, id)).collect();
            let _: () = redis::pipe()
                .atomic()
                .cmd("UNLINK")
                .arg(&keys)
                .ignore()
                .cmd("LTRIM")
                .arg(self.keys.job_tasks(job))
                .arg(ids.len())
                .arg(-1)
                .ignore()
                .query_async(&mut self.con())
                .await?;
        }
        let _: () = redis::pipe()
            .atomic()
            .cmd("UNLINK")
            .arg(self.keys.job(job))
            .arg(self.keys.job_tasks(job))
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
