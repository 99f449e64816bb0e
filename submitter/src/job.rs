//! `drover job ...`

use crate::ids::JobId;
use crate::output::{self, Format};
use drover_core::model::job::{DisableTasks, TaskCountsResult};
use drover_core::model::{CloudJob, CloudTask, JobAddParameter};
use drover_core::queue::{Publisher, Topology};
use drover_core::status::{count, Stall, StallReason, StatusStore};
use drover_core::Config;
use std::path::PathBuf;
use std::time::Duration;

mod wait;

#[derive(clap::Subcommand)]
pub(crate) enum JobCommand {
    /// Create a job on a pool: give --job-id with --pool-id, or --json-file.
    #[command(after_long_help = CREATE_EXAMPLES, group = clap::ArgGroup::new("spec").required(true))]
    Create {
        /// The new job's id (letters, digits, '-' and '_'; at most 64).
        #[arg(long, value_name = "JOB", group = "spec", requires = "pool_id")]
        job_id: Option<String>,
        /// The pool whose nodes run the job's tasks (with --job-id).
        #[arg(long, value_name = "POOL", requires = "job_id", conflicts_with = "json_file")]
        pool_id: Option<String>,
        /// A JobAddParameter JSON file (id, poolInfo, priority, maxParallelTasks, constraints,
        /// usesTaskDependencies, onAllTasksComplete, ...): the fields are listed in README.md,
        /// section "Sweeps, pipelines and job settings".
        #[arg(long, value_name = "FILE", group = "spec")]
        json_file: Option<PathBuf>,
    },
    /// Show one job, with what holds it back (notProgressing), its held tasks (dependencies) and
    /// its statistics (stats).
    Show(JobId),
    /// List jobs.
    List,
    /// Tasks and slots by state (Azure's TaskCountsResult).
    TaskCounts(JobId),
    /// Wait until every task of the job has completed; exit 0 iff all succeeded.
    ///
    /// Says at once (on stderr) when no node consumes the job's pool, and keeps waiting. On
    /// failure it lists the first failed tasks with their failure code or exit code.
    #[command(after_long_help = WAIT_EXAMPLES)]
    Wait {
        #[command(flatten)]
        job: JobId,
        /// Give up after this many seconds (exit 1); without it, wait as long as it takes.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// End the job: none of its tasks starts again, and running ones are killed.
    Terminate {
        #[command(flatten)]
        job: JobId,
        /// The reason recorded in executionInfo.terminateReason.
        #[arg(long, value_name = "REASON", default_value = "UserTerminate")]
        terminate_reason: String,
    },
    /// Disable the job: none of its tasks starts until `job enable`; its running tasks are
    /// requeued (killed, run again once enabled), terminated, or left to finish.
    Disable {
        #[command(flatten)]
        job: JobId,
        /// What happens to the running tasks: requeue, terminate or wait.
        #[arg(long, value_name = "WHAT", default_value = "requeue", value_parser = ["requeue", "terminate", "wait"])]
        disable_tasks: String,
    },
    /// Enable a disabled job: its tasks start again.
    Enable(JobId),
    /// Publish again the messages of the job's active tasks (those not waiting on a parent,
    /// blocked or parked), for tasks whose messages were lost. Safe to repeat: a task runs once
    /// however many of its messages are queued.
    Requeue(JobId),
    /// Where the job preparation and release tasks ran, and how they ended (one entry per node).
    PrepReleaseStatus(JobId),
    /// Delete the job and its task records.
    Delete(JobId),
    /// Change an active job's priority, maxParallelTasks, onAllTasksComplete, constraints or
    /// metadata (Azure's job patch: a JSON object of the fields to change).
    Patch {
        #[command(flatten)]
        job: JobId,
        /// The changes, as JSON: {"priority": 10, "maxParallelTasks": 4}.
        #[arg(long, value_name = "FILE")]
        json_file: PathBuf,
        /// Azure's update instead: the fields left out go back to their defaults.
        #[arg(long)]
        replace: bool,
    },
}

const CREATE_EXAMPLES: &str = "Examples:
  drover job create --job-id frames --pool-id render
  drover job create --json-file job.json   # {\"id\": \"sweep\", \"poolInfo\": {\"poolId\": \"render\"}, \"usesTaskDependencies\": true}";

const WAIT_EXAMPLES: &str = "Examples:
  drover job wait --job-id frames                 # a progress bar on a terminal
  drover job wait --job-id frames --timeout 3600 || drover task list --job-id frames --state completed -o table";

/// `job show`: the job as Azure shows it, plus drover's `notProgressing` when something holds
/// it back.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    #[serde(flatten)]
    job: CloudJob,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_progressing: Option<Stall>,
    /// Azure's JobStatistics (its url left out).
    stats: drover_core::model::job::Statistics,
}

pub(crate) async fn run(config: &Config, format: Format, cmd: JobCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        JobCommand::Create { job_id, pool_id, json_file } => {
            let spec = match (json_file, job_id, pool_id) {
                (Some(path), _, _) => crate::read_json::<JobAddParameter>(&path, "JobAddParameter")?,
                (None, Some(job), Some(pool)) => JobAddParameter::new(&job, &pool),
                _ => anyhow::bail!("give --job-id with --pool-id, or --json-file"),
            };
            let made = drover_core::actions::create_job(config, &store, spec).await?;
            output::one(format, &store.get_job(&made.id).await?)
        }
        JobCommand::Show(JobId { job_id }) => {
            let mut job = store.get_job(&job_id).await?;
            job.dependencies = store.dependency_report(&job_id, 100).await?;
            let not_progressing = store.job_stall(&job_id).await?;
            let stats = job.stats.clone();
            output::one(format, &JobView { job, not_progressing, stats })
        }
        JobCommand::List => {
            let mut jobs = Vec::new();
            for id in store.job_ids().await? {
                if let Ok(job) = store.get_job(&id).await {
                    jobs.push(job);
                }
            }
            output::list(format, &jobs, &["id", "poolInfo.poolId", "state", "creationTime"])
        }
        JobCommand::TaskCounts(JobId { job_id }) => output::one(format, &store.task_counts(&job_id).await?),
        JobCommand::Wait { job: JobId { job_id }, timeout } => {
            wait::wait(&store, format, &job_id, timeout.map(Duration::from_secs)).await
        }
        JobCommand::Terminate { job: JobId { job_id }, terminate_reason } => {
            store.terminate_job(&job_id, &terminate_reason).await?;
            output::one(format, &store.get_job(&job_id).await?)
        }
        JobCommand::Disable { job: JobId { job_id }, disable_tasks } => {
            let tasks = DisableTasks::parse(&disable_tasks)
                .ok_or_else(|| anyhow::anyhow!("--disable-tasks {disable_tasks:?}: use requeue, terminate or wait"))?;
            store.disable_job(&job_id, tasks).await?;
            output::one(format, &store.get_job(&job_id).await?)
        }
        JobCommand::Enable(JobId { job_id }) => {
            let publisher = Publisher::new(&config.broker(), "drover", Topology::new(&config.account));
            drover_core::actions::enable_job(&publisher, &store, &job_id).await?;
            output::one(format, &store.get_job(&job_id).await?)
        }
        JobCommand::Requeue(JobId { job_id }) => {
            let publisher = Publisher::connect(&config.broker(), Topology::new(&config.account)).await?;
            let requeued = drover_core::requeue::requeue_job(&store, &publisher, &job_id).await;
            publisher.close().await;
            output::one(format, &serde_json::json!({"jobId": job_id, "requeued": requeued?}))
        }
        JobCommand::PrepReleaseStatus(JobId { job_id }) => {
            output::list(format, &store.prep_release_status(&job_id).await?, &["nodeId", "poolId"])
        }
        JobCommand::Delete(JobId { job_id }) => Ok(store.delete_job(&job_id).await?),
        JobCommand::Patch { job: JobId { job_id }, json_file, replace } => {
            let shown = json_file.display();
            let change = crate::read_json_value(&json_file)?;
            drover_core::actions::change_job(&store, &job_id, &change, replace)
                .await
                .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            output::one(format, &store.get_job(&job_id).await?)
        }
    }
}

/// `3 of 5 tasks completed (2 succeeded, 1 failed), 1 running, 1 active`.
fn summary(c: &TaskCountsResult) -> String {
    let t = &c.task_counts;
    format!(
        "{} of {} completed ({} succeeded, {} failed), {} running, {} active",
        t.completed,
        count(t.total(), "task", "tasks"),
        t.succeeded,
        t.failed,
        t.running,
        t.active
    )
}

/// Whether a stall is about the pool's nodes (what `job wait` reports as it waits).
fn about_nodes(stall: &Stall) -> bool {
    matches!(stall.reason, StallReason::NoLiveNode | StallReason::StartTaskFailed)
}

/// One line for a failed task: its id, failure code, exit code and the start of its message.
fn failure_line(task: &CloudTask) -> String {
    let info = task.execution_info.as_ref();
    let mut line = format!("  {}:", task.spec.id);
    if let Some(f) = info.and_then(|i| i.failure_info.as_ref()) {
        line.push_str(&format!(" {}", f.code));
    }
    if let Some(code) = info.and_then(|i| i.exit_code) {
        line.push_str(&format!(" (exit code {code})"));
    }
    if let Some(f) = info.and_then(|i| i.failure_info.as_ref()) {
        let message: String = f.message.lines().next().unwrap_or("").chars().take(120).collect();
        if !message.is_empty() {
            line.push_str(&format!(": {message}"));
        }
    }
    line
}
