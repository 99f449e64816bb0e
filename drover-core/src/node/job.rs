//! The jobs a node runs tasks of: the job preparation task before the first of them, the job
//! release task when the job ends, and the watch that kills running tasks whose job ended or that
//! `drover task terminate` named.

use super::command::Command;
use super::NodeContext;
use crate::model::job::{JobPreparationTask, JobReleaseTask};
use crate::model::task::{FailureCode, FailureInfo};
use crate::model::{now_ms, rfc3339, EnvironmentSetting};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// How often a node checks the jobs of its running tasks (job ended, task terminated).
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Azure's default limit for a job release task.
const RELEASE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The most runs of a start or preparation task with `maxTaskRetryCount` -1.
const MAX_RUNS: i32 = 100;

/// How many times a start or preparation task runs at most: once plus its retries.
pub(super) fn runs_allowed(max_task_retry_count: Option<i32>) -> i32 {
    match max_task_retry_count.unwrap_or(0) {
        r if r < 0 => MAX_RUNS,
        r => r.saturating_add(1).min(MAX_RUNS),
    }
}

/// The jobs this node has seen, each prepared once.
#[derive(Default)]
pub(crate) struct NodeJobs {
    jobs: tokio::sync::Mutex<HashMap<String, Arc<OnceCell<Prepared>>>>,
}

#[derive(Debug, Clone)]
struct Prepared {
    /// What the job's tasks need from it on this node, or why they may not run.
    result: Result<JobReady, FailureInfo>,
    /// The release task and the job's environment, kept here because the job may be deleted
    /// before the release runs. Only set when the preparation ran on this node.
    release: Option<(JobReleaseTask, Vec<EnvironmentSetting>)>,
}

/// What a job's tasks take from the job on this node, read once from its checked record.
#[derive(Debug, Clone)]
pub(super) struct JobReady {
    /// The preparation's working directory, if the job has a preparation task.
    pub(super) prep_wd: Option<PathBuf>,
    /// The job's commonEnvironmentSettings.
    pub(super) env: Vec<EnvironmentSetting>,
}

/// Runs the job's preparation task on this node before its first task here (once; concurrent
/// first tasks wait for it), once its record verified. Ok holds what its tasks need; Err
/// the failure to record for the task when the preparation failed and `waitForSuccess` holds.
pub(super) async fn prepared(ctx: &NodeContext, job: &str) -> Result<JobReady, FailureInfo> {
    let cell = ctx.jobs.jobs.lock().await.entry(job.to_string()).or_default().clone();
    // Boxed: preparing runs a command, a future of kilobytes every task's would otherwise hold.
    cell.get_or_init(|| Box::pin(prepare(ctx, job))).await.result.clone()
}

async fn prepare(ctx: &NodeContext, job: &str) -> Prepared {
    let spec = match ctx.persist("get_job", || ctx.store.get_job_checked(job)).await {
        Ok(j) => j.spec,
        Err(e) => {
            let failure = match e {
                crate::Error::Refused(why) => FailureInfo::server(FailureCode::TaskRecordRefused, why),
                e => {
                    FailureInfo::server(FailureCode::JobPreparationTaskFailed, format!("cannot read job {job:?}: {e}"))
                }
            };
            return Prepared { result: Err(failure), release: None };
        }
    };
    let env = spec.common_environment_settings.clone();
    let Some(prep) = spec.job_preparation_task else {
        return Prepared { result: Ok(JobReady { prep_wd: None, env }), release: None };
    };
    let release = spec.job_release_task.map(|r| (r, env.clone()));
    let wait = prep.wait_for_success.unwrap_or(true);
    let (dir, info) = run_prep(ctx, job, &prep, &env).await;
    // Remember the job, so a restart of this node (same id) still runs its release.
    if let Err(e) = ctx.persist("add_node_job", || ctx.store.add_node_job(&ctx.options.node_id, job)).await {
        tracing::warn!(job, error = %e, "could not record the prepared job");
    }
    let result = match (&info.failure_info, wait) {
        (Some(f), true) => Err(FailureInfo::user(
            FailureCode::JobPreparationTaskFailed,
            format!("the job preparation task failed on node {}: {}", ctx.options.node_id, f.message),
        )),
        _ => Ok(JobReady { prep_wd: Some(dir), env }),
    };
    Prepared { result, release }
}

/// Azure's JobPreparationTaskExecutionInformation / JobReleaseTaskExecutionInformation.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExecutionInfo {
    start_time: String,
    end_time: String,
    state: &'static str,
    task_root_directory: String,
    exit_code: Option<i32>,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_info: Option<FailureInfo>,
    retry_count: i32,
}

async fn run_prep(
    ctx: &NodeContext,
    job: &str,
    prep: &JobPreparationTask,
    job_env: &[EnvironmentSetting],
) -> (PathBuf, ExecutionInfo) {
    let command = Command {
        command_line: &prep.command_line,
        resource_files: &prep.resource_files,
        packages: &[],
        job_env,
        own_env: &prep.environment_settings,
        job: Some(job),
        task: None,
        prep_wd: Some(ctx.prep_dir(job).join("wd")),
        dir: ctx.prep_dir(job),
        wall_clock: prep.constraints.as_ref().and_then(|c| c.max_wall_clock_time).map(|d| d.0),
        identity: prep.user_identity.as_ref(),
        job_token: false,
    };
    let runs = runs_allowed(prep.constraints.as_ref().and_then(|c| c.max_task_retry_count));
    let start = now_ms();
    let mut info = ExecutionInfo::default();
    for n in 0..runs {
        info = run_one(ctx, &command).await;
        info.retry_count = n;
        info.start_time = rfc3339(start);
        if info.failure_info.is_none() {
            break;
        }
        tracing::warn!(job, run = n + 1, of = runs, failure = ?info.failure_info, "job preparation task failed");
    }
    record(ctx, job, "jobPreparationTaskExecutionInfo", &info).await;
    (command.wd(), info)
}

/// Runs a job preparation or release task once.
async fn run_one(ctx: &NodeContext, command: &Command<'_>) -> ExecutionInfo {
    let start_time = rfc3339(now_ms());
    let ended = command.run(ctx, &CancellationToken::new()).await;
    let failure_info = ended.failure();
    ExecutionInfo {
        start_time,
        end_time: rfc3339(now_ms()),
        state: "completed",
        task_root_directory: command.dir.to_string_lossy().into_owned(),
        exit_code: ended.exit_code(),
        result: if failure_info.is_none() { "success" } else { "failure" },
        failure_info,
        retry_count: 0,
    }
}

/// Records a preparation or release run in the job's per-node status (`drover job prep-release-status`).
async fn record(ctx: &NodeContext, job: &str, field: &str, info: &ExecutionInfo) {
    let value = serde_json::to_value(info).unwrap_or_default();
    if let Err(e) = ctx.store.record_node_job_task(job, &ctx.options.node_id, &ctx.options.pool_id, field, value).await
    {
        tracing::warn!(job, error = %e, "could not record the job {field}");
    }
}

/// After a restart under the same node id: the jobs this node had prepared are known again (their
/// preparation is not rerun: its directory is still here), so their release still runs.
pub(super) async fn restore(ctx: &NodeContext) {
    let jobs = match ctx.store.node_jobs(&ctx.options.node_id).await {
        Ok(jobs) => jobs,
        Err(e) => return tracing::warn!(error = %e, "cannot read the jobs this node prepared"),
    };
    for job in jobs {
        match ctx.store.get_job_checked(&job).await {
            Ok(j) => {
                let prep_wd = Some(ctx.prep_dir(&job).join("wd"));
                let env = j.spec.common_environment_settings;
                let release = j.spec.job_release_task.map(|r| (r, env.clone()));
                let prepared = Prepared { result: Ok(JobReady { prep_wd, env }), release };
                ctx.jobs.jobs.lock().await.insert(job.clone(), Arc::new(OnceCell::new_with(Some(prepared))));
                tracing::info!(job, "job prepared by an earlier run of this node");
            }
            Err(_) => {
                let _ = ctx.store.remove_node_job(&ctx.options.node_id, &job).await;
            }
        }
    }
}

/// Every second: kills the running tasks whose job ended or that were terminated (handing back
/// those of a job disabled with `requeue`), and runs the
/// release task of every job prepared here that ended.
pub(super) async fn watch(ctx: Arc<NodeContext>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let running: Vec<(String, String)> =
            ctx.running.lock().map(|r| r.keys().cloned().collect()).unwrap_or_default();
        let jobs: Vec<String> = ctx.jobs.jobs.lock().await.keys().cloned().collect();
        if running.is_empty() && jobs.is_empty() {
            continue;
        }
        let seen = match ctx.store.watch(&running, &jobs).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::debug!(error = %e, "watch failed");
                continue;
            }
        };
        if let (Ok(r), Ok(mut requeued)) = (ctx.running.lock(), ctx.requeued.lock()) {
            for key in &seen.kill {
                if let Some(token) = r.get(key) {
                    tracing::info!(job = %key.0, task = %key.1, "killing a task: its job ended or it was terminated");
                    token.cancel();
                }
            }
            for key in seen.requeue {
                if let Some(token) = r.get(&key) {
                    tracing::info!(job = %key.0, task = %key.1, "handing a task back: its job was disabled");
                    token.cancel();
                    requeued.insert(key);
                }
            }
        }
        for job in seen.ended {
            let cell = ctx.jobs.jobs.lock().await.remove(&job);
            let release = cell.and_then(|c| c.get().and_then(|p| p.release.clone()));
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Some((task, env)) = release {
                    release_job(&ctx, &job, &task, &env).await;
                }
                if let Err(e) = ctx.store.remove_node_job(&ctx.options.node_id, &job).await {
                    tracing::debug!(job, error = %e, "could not forget the prepared job");
                }
            });
        }
    }
}

async fn release_job(ctx: &NodeContext, job: &str, task: &JobReleaseTask, job_env: &[EnvironmentSetting]) {
    let command = Command {
        command_line: &task.command_line,
        resource_files: &task.resource_files,
        packages: &[],
        job_env,
        own_env: &task.environment_settings,
        job: Some(job),
        task: None,
        prep_wd: Some(ctx.prep_dir(job).join("wd")),
        dir: ctx.release_dir(job),
        wall_clock: Some(task.max_wall_clock_time.map_or(RELEASE_LIMIT, |d| d.0)),
        identity: task.user_identity.as_ref(),
        job_token: false,
    };
    let info = run_one(ctx, &command).await;
    tracing::info!(job, result = info.result, "job release task ran");
    record(ctx, job, "jobReleaseTaskExecutionInfo", &info).await;
}
