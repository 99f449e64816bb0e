//! Job schedules: Azure's JobScheduleAddParameter (a job made again and again) and
//! CloudJobSchedule (what drover reports).

use super::job::JobAddParameter;
use super::{validate_id, IsoDuration, MetadataItem};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A schedule to add: when to make jobs, and what each job is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobScheduleAddParameter {
    /// Required to create (validated); an update may leave it out.
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub schedule: Schedule,
    /// Azure's JobSpecification: a job without its id.
    pub job_specification: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataItem>,
}

/// When jobs are made: from `doNotRunUntil` (default: at once), every `recurrenceInterval`
/// (none: once), until `doNotRunAfter`; a run more than `startWindow` late is skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_run_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_run_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_window: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_interval: Option<IsoDuration>,
}

/// Milliseconds since the epoch of an RFC 3339 time, naming `field` when it is not one.
fn instant(field: &str, text: &Option<String>) -> Result<Option<i64>> {
    text.as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| Error::invalid(format!("schedule.{field} {t:?}: not an RFC 3339 time ({e})")))
        })
        .transpose()
}

impl JobScheduleAddParameter {
    /// The id of the schedule's `n`th job (from 1): `<schedule>-job-<n>`.
    pub fn job_id(&self, n: u64) -> String {
        format!("{}-job-{n}", self.id)
    }

    /// The schedule's `n`th job.
    pub fn job(&self, n: u64) -> Result<JobAddParameter> {
        let mut spec = self.job_specification.clone();
        match &mut spec {
            serde_json::Value::Object(members) => {
                members.insert("id".into(), serde_json::Value::String(self.job_id(n)));
            }
            _ => return Err(Error::invalid("jobSpecification: must be an object")),
        }
        super::lenient::from_value(spec).map_err(|e| Error::invalid(format!("jobSpecification.{e}")))
    }

    /// Refuses a schedule whose times or job are not valid.
    pub fn validate(&self) -> Result<()> {
        validate_id("job schedule id", &self.id)?;
        // Its jobs' ids must be valid too: room for `-job-` and a 9-digit count.
        if self.id.len() > super::MAX_ID_LEN - 14 {
            return Err(Error::invalid(format!(
                "job schedule id {:?}: at most 50 characters (its jobs add -job-N)",
                self.id
            )));
        }
        let s = &self.schedule;
        let (until, after) =
            (instant("doNotRunUntil", &s.do_not_run_until)?, instant("doNotRunAfter", &s.do_not_run_after)?);
        if let (Some(u), Some(a)) = (until, after) {
            if a < u {
                return Err(Error::invalid("schedule.doNotRunAfter: before doNotRunUntil"));
            }
        }
        if s.recurrence_interval.is_some_and(|i| i.0.as_millis() < 1000) {
            return Err(Error::invalid("schedule.recurrenceInterval: at least PT1S"));
        }
        let job = self.job(1).map_err(|e| Error::invalid(format!("job schedule {:?}: {e}", self.id)))?;
        job.validate().map_err(|e| Error::invalid(format!("jobSpecification: {e}")))
    }

    /// When the first job is due, for a schedule created at `created` (ms).
    pub fn first_run(&self, created: i64) -> Result<i64> {
        Ok(instant("doNotRunUntil", &self.schedule.do_not_run_until)?.map_or(created, |u| u.max(created)))
    }

    /// After a job due at `due` was made (or skipped) at `now`, when the next one is due; `None`
    /// when the schedule has made its last job. Runs more than `startWindow` late are skipped.
    pub fn next_run(&self, due: i64, now: i64) -> Result<Option<i64>> {
        let Some(interval) = self.schedule.recurrence_interval else { return Ok(None) };
        let step = i64::try_from(interval.0.as_millis()).unwrap_or(i64::MAX).max(1);
        let window = self.schedule.start_window.map(|w| i64::try_from(w.0.as_millis()).unwrap_or(i64::MAX));
        let mut next = due.saturating_add(step);
        if let Some(window) = window {
            while next.saturating_add(window) < now {
                next = next.saturating_add(step);
            }
        }
        let after = instant("doNotRunAfter", &self.schedule.do_not_run_after)?;
        Ok(Some(next).filter(|n| after.is_none_or(|a| *n <= a)))
    }
}

/// Azure's CloudJobSchedule: the spec and its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudJobSchedule {
    #[serde(flatten)]
    pub spec: JobScheduleAddParameter,
    /// `active`, `disabled`, `terminating` or `completed`.
    pub state: String,
    pub creation_time: String,
    pub execution_info: JobScheduleExecutionInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleExecutionInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_job: Option<RecentJob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentJob {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(s: serde_json::Value) -> JobScheduleAddParameter {
        let doc = serde_json::json!({"id": "s", "schedule": s, "jobSpecification": {"poolInfo": {"poolId": "p"}}});
        super::super::lenient::from_value(doc).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn runs_follow_the_interval_skip_late_ones_and_end() {
        let t0 = 1_000_000;
        let s = schedule(serde_json::json!({"recurrenceInterval": "PT2S", "startWindow": "PT1S"}));
        assert_eq!(s.first_run(t0).ok(), Some(t0));
        assert_eq!(s.next_run(t0, t0 + 100).ok(), Some(Some(t0 + 2000)));
        // Made 5.5 s late: the runs due at +2 s and +4 s are past their window.
        assert_eq!(s.next_run(t0, t0 + 5500).ok(), Some(Some(t0 + 6000)));
        let once = schedule(serde_json::json!({}));
        assert_eq!(once.next_run(t0, t0).ok(), Some(None));
        let ends = schedule(serde_json::json!({"recurrenceInterval": "PT2S", "doNotRunAfter": "1970-01-01T00:16:43Z"}));
        assert_eq!(ends.next_run(t0, t0).ok(), Some(Some(t0 + 2000)));
        assert_eq!(ends.next_run(t0 + 2000, t0 + 2000).ok(), Some(None));
        assert_eq!(s.job(3).map(|j| j.id).ok(), Some("s-job-3".to_string()));
        assert!(schedule(serde_json::json!({"recurrenceInterval": "PT0.5S"})).validate().is_err());
    }
}
