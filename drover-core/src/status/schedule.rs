//! Job schedules in Redis: a hash per schedule (`drover:A:schedule:S`: its spec, state, run
//! count and when the next job is due) and the account's set of them. Each due job is made by
//! `run_schedule.lua`, fenced by the run count, so it is made once however many schedulers run.

use super::scripts::{CREATE_SCHEDULE, RUN_SCHEDULE, SCHEDULE_STATE, UPDATE_SCHEDULE};
use super::StatusStore;
use crate::model::schedule::{CloudJobSchedule, JobScheduleAddParameter, JobScheduleExecutionInfo, RecentJob};
use crate::model::{now_ms, rfc3339};
use crate::{Error, Result};
use std::collections::HashMap;

impl StatusStore {
    /// Records a schedule; refuses an existing id.
    pub async fn create_schedule(&self, spec: &JobScheduleAddParameter) -> Result<()> {
        spec.validate()?;
        let now = now_ms();
        let text = serde_json::to_string(spec).map_err(|e| Error::Internal(format!("schedule {:?}: {e}", spec.id)))?;
        let text = self.sealed(text, &format!("job schedule {:?}", spec.id))?;
        let mut inv = CREATE_SCHEDULE.prepare();
        inv.key(self.keys.schedule(&spec.id))
            .key(self.keys.schedules())
            .arg(&spec.id)
            .arg(text)
            .arg(now)
            .arg(spec.first_run(now)?);
        let reply = CREATE_SCHEDULE.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(()),
            "dup" => Err(Error::Conflict { kind: "job schedule", id: spec.id.clone() }),
            _ => Err(reply.unexpected()),
        }
    }

    /// Replaces a schedule's schedule, job specification and metadata (Azure's update): the
    /// jobs it makes from now on follow them. A completed schedule is refused.
    pub async fn update_schedule(&self, spec: &JobScheduleAddParameter) -> Result<()> {
        spec.validate()?;
        let text = serde_json::to_string(spec).map_err(|e| Error::Internal(format!("schedule {:?}: {e}", spec.id)))?;
        let text = self.sealed(text, &format!("job schedule {:?}", spec.id))?;
        let interval = spec.schedule.recurrence_interval.map_or(0, |i| i.0.as_millis() as i64);
        let mut inv = UPDATE_SCHEDULE.prepare();
        inv.key(self.keys.schedule(&spec.id)).arg(text).arg(spec.first_run(0)?).arg(interval).arg(now_ms());
        let reply = UPDATE_SCHEDULE.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(()),
            "nosched" => Err(Error::NotFound { kind: "job schedule", id: spec.id.clone() }),
            "state" => Err(Error::State(format!("job schedule {:?} is completed: it cannot be updated", spec.id))),
            _ => Err(reply.unexpected()),
        }
    }

    async fn schedule_fields(&self, id: &str) -> Result<HashMap<String, String>> {
        let f: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.keys.schedule(id)).query_async(&mut self.con()).await?;
        if f.is_empty() {
            return Err(Error::NotFound { kind: "job schedule", id: id.into() });
        }
        Ok(f)
    }

    /// One schedule with its state and execution info.
    pub async fn get_schedule(&self, id: &str) -> Result<CloudJobSchedule> {
        let f = self.schedule_fields(id).await?;
        let spec: JobScheduleAddParameter = serde_json::from_str(f.get("spec").map_or("", String::as_str))
            .map_err(|e| Error::Corrupt(format!("stored job schedule {id:?} is unreadable: {e}")))?;
        let ms = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        let state = f.get("state").cloned().unwrap_or_else(|| "active".into());
        Ok(CloudJobSchedule {
            spec,
            execution_info: JobScheduleExecutionInfo {
                next_run_time: ms("next").filter(|_| state == "active").map(rfc3339),
                recent_job: f.get("recent").map(|id| RecentJob { id: id.clone() }),
                end_time: ms("end").map(rfc3339),
            },
            state,
            creation_time: rfc3339(ms("ctime").unwrap_or(0)),
        })
    }

    /// Every schedule of the account, by id.
    pub async fn list_schedules(&self) -> Result<Vec<CloudJobSchedule>> {
        let mut ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.schedules()).query_async(&mut self.con()).await?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_schedule(&id).await {
                Ok(s) => out.push(s),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Moves a schedule to `state` (`active`, `disabled` or `completed`) from one of `from`.
    pub async fn set_schedule_state(&self, id: &str, state: &str, from: &[&str]) -> Result<()> {
        let mut inv = SCHEDULE_STATE.prepare();
        inv.key(self.keys.schedule(id)).arg(state).arg(from.join(",")).arg(now_ms());
        let reply = SCHEDULE_STATE.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(()),
            "nosched" => Err(Error::NotFound { kind: "job schedule", id: id.into() }),
            "state" => Err(Error::State(format!(
                "job schedule {id:?} is {}: it cannot become {state}",
                reply.rest.first().map_or("", String::as_str)
            ))),
            _ => Err(reply.unexpected()),
        }
    }

    /// Removes a schedule (the jobs it made stay).
    pub async fn delete_schedule(&self, id: &str) -> Result<()> {
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.keys.schedule(id))
            .cmd("SREM")
            .arg(self.keys.schedules())
            .arg(id)
            .query_async(&mut self.con())
            .await?;
        if deleted == 0 {
            return Err(Error::NotFound { kind: "job schedule", id: id.into() });
        }
        Ok(())
    }

    /// The job of every active schedule that is due at `now`, to be made by
    /// [`StatusStore::make_scheduled_job`] (`actions::run_due_schedules` does both).
    pub async fn due_jobs(&self, now: i64) -> Result<Vec<DueJob>> {
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.schedules()).query_async(&mut self.con()).await?;
        let mut due_jobs = Vec::new();
        for id in ids {
            let f = match self.schedule_fields(&id).await {
                Ok(f) => f,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let due = f.get("next").and_then(|v| v.parse::<i64>().ok());
            let (Some(due), Some("active")) = (due, f.get("state").map(String::as_str)) else { continue };
            if due > now {
                continue;
            }
            let runs: u64 = f.get("runs").and_then(|v| v.parse().ok()).unwrap_or(0);
            let spec: JobScheduleAddParameter = match serde_json::from_str(f.get("spec").map_or("", String::as_str)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(schedule = %id, error = %e, "stored job schedule is unreadable");
                    continue;
                }
            };
            // Checked at creation; a record that no longer reads is left, not the other schedules.
            match (spec.job(runs + 1), spec.next_run(due, now)) {
                (Ok(job), Ok(next)) => due_jobs.push(DueJob { schedule: id, runs, next, job }),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(schedule = %id, error = %e, "stored job schedule cannot make its job");
                }
            }
        }
        Ok(due_jobs)
    }

    /// Makes a due job (its pool must exist); false if another scheduler made it first, or it
    /// was skipped (its pool is gone, or its id is taken).
    pub async fn make_scheduled_job(&self, due: &DueJob, now: i64) -> Result<bool> {
        let mut inv = RUN_SCHEDULE.prepare();
        inv.key(self.keys.schedule(&due.schedule))
            .arg(due.runs)
            .arg(now)
            .arg(due.next.map_or(String::new(), |n| n.to_string()));
        self.new_job(&mut inv, &due.job, now)?;
        let reply = RUN_SCHEDULE.run(inv, &mut self.con()).await?;
        match reply.head.as_str() {
            "ok" => Ok(true),
            "stale" => Ok(false),
            skipped => {
                tracing::warn!(schedule = %due.schedule, job = %due.job.id, reason = skipped, "a scheduled job was skipped (its pool is gone, or its id is taken)");
                Ok(false)
            }
        }
    }
}

/// A schedule's job that is due now.
#[derive(Debug, Clone)]
pub struct DueJob {
    pub schedule: String,
    /// The jobs the schedule had made (the fence of the script that makes this one).
    runs: u64,
    next: Option<i64>,
    /// The job to make, `<schedule>-job-<runs + 1>`.
    pub job: crate::model::JobAddParameter,
}
