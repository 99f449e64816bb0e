//! `drover job-schedule ...`

use crate::output::{self, Format};
use drover_core::model::schedule::JobScheduleAddParameter;
use drover_core::status::StatusStore;
use drover_core::Config;
use std::path::PathBuf;

/// A job schedule, by id.
#[derive(clap::Args, Debug)]
pub(crate) struct JobScheduleId {
    /// The schedule's id (as given to `drover job-schedule create`).
    #[arg(long, value_name = "SCHEDULE")]
    pub(crate) job_schedule_id: String,
}

#[derive(clap::Subcommand)]
pub(crate) enum JobScheduleCommand {
    /// Create a schedule from Azure's JobScheduleAddParameter JSON; drover-monitor makes its jobs
    /// (`<schedule>-job-<n>`) when they are due.
    #[command(after_long_help = CREATE_EXAMPLE)]
    Create {
        /// The schedule as Azure's JSON.
        #[arg(long, value_name = "PATH")]
        json_file: PathBuf,
    },
    /// Replace a schedule's schedule, jobSpecification and metadata (Azure's
    /// JobScheduleUpdateParameter; the schedule's jobs so far are unchanged).
    Update {
        #[command(flatten)]
        id: JobScheduleId,
        /// The new schedule as Azure's JSON (its `id`, if given, must be the schedule's).
        #[arg(long, value_name = "PATH")]
        json_file: PathBuf,
    },
    /// Show a schedule, its state, next run time and most recent job.
    Show(JobScheduleId),
    /// List the account's schedules.
    List,
    /// Stop making jobs until enabled again.
    Disable(JobScheduleId),
    /// Make jobs again.
    Enable(JobScheduleId),
    /// Make no more jobs (the schedule completes; its jobs go on).
    Terminate(JobScheduleId),
    /// Remove a schedule (its jobs stay).
    Delete(JobScheduleId),
}

const CREATE_EXAMPLE: &str = "Example (a job every hour on pool render, for a day):
  {\"id\": \"nightly\",
   \"schedule\": {\"recurrenceInterval\": \"PT1H\", \"doNotRunAfter\": \"2027-01-02T00:00:00Z\"},
   \"jobSpecification\": {\"poolInfo\": {\"poolId\": \"render\"}, \"onAllTasksComplete\": \"terminatejob\"}}";

pub(crate) async fn run(config: &Config, format: Format, cmd: JobScheduleCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        JobScheduleCommand::Create { json_file } => {
            let spec = crate::read_json::<JobScheduleAddParameter>(&json_file, "JobScheduleAddParameter")?;
            store.create_schedule(&spec).await?;
            output::one(format, &store.get_schedule(&spec.id).await?)
        }
        JobScheduleCommand::Update { id: JobScheduleId { job_schedule_id }, json_file } => {
            let spec = crate::read_json::<JobScheduleAddParameter>(&json_file, "JobScheduleAddParameter")?;
            drover_core::actions::update_schedule(&store, &job_schedule_id, spec)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", json_file.display()))?;
            output::one(format, &store.get_schedule(&job_schedule_id).await?)
        }
        JobScheduleCommand::Show(JobScheduleId { job_schedule_id }) => {
            output::one(format, &store.get_schedule(&job_schedule_id).await?)
        }
        JobScheduleCommand::List => output::list(
            format,
            &store.list_schedules().await?,
            &["id", "state", "executionInfo.nextRunTime", "executionInfo.recentJob.id"],
        ),
        JobScheduleCommand::Disable(JobScheduleId { job_schedule_id }) => {
            store.set_schedule_state(&job_schedule_id, "disabled", &["active"]).await?;
            output::one(format, &store.get_schedule(&job_schedule_id).await?)
        }
        JobScheduleCommand::Enable(JobScheduleId { job_schedule_id }) => {
            store.set_schedule_state(&job_schedule_id, "active", &["disabled", "active"]).await?;
            output::one(format, &store.get_schedule(&job_schedule_id).await?)
        }
        JobScheduleCommand::Terminate(JobScheduleId { job_schedule_id }) => {
            store.set_schedule_state(&job_schedule_id, "completed", &["active", "disabled"]).await?;
            output::one(format, &store.get_schedule(&job_schedule_id).await?)
        }
        JobScheduleCommand::Delete(JobScheduleId { job_schedule_id }) => {
            Ok(store.delete_schedule(&job_schedule_id).await?)
        }
    }
}
