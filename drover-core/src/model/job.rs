//! Jobs: Azure's JobAddParameter (what users submit) and CloudJob (what drover reports).

use super::task::{ApplicationPackageReference, OutputFile, ResourceFile, TaskAddParameter, TaskConstraints};
use super::{validate_env, validate_id, EnvironmentSetting, IsoDuration, MetadataItem};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A job to add to a pool (Azure's JobAddParameter, the parts drover runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobAddParameter {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub pool_info: PoolInformation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_tasks: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<JobConstraints>,
    /// Added as the job's first task; by default the job ends when it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_manager_task: Option<JobManagerTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_preparation_task: Option<JobPreparationTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_release_task: Option<JobReleaseTask>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub common_environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_all_tasks_complete: Option<OnAllTasksComplete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_task_failure: Option<OnTaskFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_task_dependencies: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataItem>,
    // Accepted and kept, without effect (`fields::KINDS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_task_preemption: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<serde_json::Value>,
}

/// Azure's JobManagerTask: the job's first task, typically the one that adds the others. By
/// default it has its node to itself (`runExclusive`) and the job ends when it completes
/// (`killJobOnCompletion`, terminate reason `JMComplete`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobManagerTask {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<OutputFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_job_on_completion: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<super::UserIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_exclusive: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_package_references: Vec<ApplicationPackageReference>,
    /// Accepted and kept, without effect (`fields::KINDS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_low_priority_node: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_token_settings: Option<super::task::AuthenticationTokenSettings>,
}

impl JobManagerTask {
    /// The task it is, on a pool whose nodes have `pool_slots` slots: `runExclusive` (the
    /// default) takes them all.
    pub fn task(&self, pool_slots: u32) -> TaskAddParameter {
        let slots = match self.run_exclusive {
            Some(false) => self.required_slots,
            _ => Some(pool_slots.max(1)),
        };
        TaskAddParameter {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            command_line: self.command_line.clone(),
            resource_files: self.resource_files.clone(),
            output_files: self.output_files.clone(),
            environment_settings: self.environment_settings.clone(),
            constraints: self.constraints.clone(),
            required_slots: slots,
            application_package_references: self.application_package_references.clone(),
            user_identity: self.user_identity.clone(),
            authentication_token_settings: self.authentication_token_settings.clone(),
            ..Default::default()
        }
    }

    /// Whether the job ends when it completes.
    pub fn kills_job(&self) -> bool {
        self.kill_job_on_completion != Some(false)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolInformation {
    /// The pool (with an auto pool, the one `drover job create` made for the job).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pool_specification: Option<AutoPoolSpecification>,
}

/// Azure's AutoPoolSpecification: a pool made with the job, and (`poolLifetimeOption` `job`,
/// without `keepAlive`) removed once the job has completed. Its workers are the autoscaler's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoPoolSpecification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pool_id_prefix: Option<String>,
    pub pool_lifetime_option: PoolLifetimeOption,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Azure's PoolSpecification: a pool without its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<serde_json::Value>,
}

/// How long an auto pool lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PoolLifetimeOption {
    Job,
    JobSchedule,
}

impl AutoPoolSpecification {
    /// The pool it makes for job `job`: `<autoPoolIdPrefix or "auto">_<job>` (cut to 64
    /// characters, the end replaced by a hash of the whole when cut).
    pub fn pool_for(&self, job: &str) -> Result<super::PoolAddParameter> {
        let prefix = self.auto_pool_id_prefix.as_deref().unwrap_or("auto");
        let mut id = format!("{prefix}_{job}");
        if id.len() > super::MAX_ID_LEN {
            // A hash that stays the same across builds: a rerun must name the same pool.
            use sha2::Digest;
            let hash: String = sha2::Sha256::digest(id.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
            id = format!("{}{hash}", id.chars().take(super::MAX_ID_LEN - 16).collect::<String>());
        }
        let mut pool = self.pool.clone().unwrap_or_else(|| serde_json::json!({}));
        match &mut pool {
            serde_json::Value::Object(members) => {
                members.insert("id".into(), serde_json::Value::String(id));
            }
            _ => return Err(Error::invalid("poolInfo.autoPoolSpecification.pool: must be an object")),
        }
        super::lenient::from_value(pool).map_err(|e| Error::invalid(format!("poolInfo.autoPoolSpecification.pool.{e}")))
    }

    /// Whether the pool goes once the job has completed.
    pub fn ends_with_job(&self) -> bool {
        self.pool_lifetime_option == PoolLifetimeOption::Job && self.keep_alive != Some(true)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
}

/// Runs on a node before the first task of the job there (Azure's JobPreparationTask).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobPreparationTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    /// Whether the job's tasks wait for it to succeed on the node (default true). When it fails,
    /// the job's tasks on that node fail with `JobPreparationTaskFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_success: Option<bool>,
    /// Accepted for compatibility; a node runs the preparation once per job per worker process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_on_node_reboot_after_success: Option<bool>,
    /// Who it runs as (default: a non-admin auto-user of pool scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<super::UserIdentity>,
}

/// Runs on every node that ran the job's preparation when the job ends (Azure's JobReleaseTask).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobReleaseTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<IsoDuration>,
    /// Who it runs as (default: a non-admin auto-user of pool scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<super::UserIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAllTasksComplete {
    #[serde(alias = "noAction")]
    NoAction,
    #[serde(alias = "terminateJob")]
    TerminateJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTaskFailure {
    #[serde(alias = "noAction")]
    NoAction,
    #[serde(alias = "performExitOptionsJobAction")]
    PerformExitOptionsJobAction,
}

impl JobAddParameter {
    /// A job with just an id on a pool.
    pub fn new(id: &str, pool_id: &str) -> Self {
        JobAddParameter {
            id: id.into(),
            pool_info: PoolInformation { pool_id: pool_id.into(), auto_pool_specification: None },
            ..Default::default()
        }
    }

    /// Checks every field drover can check without touching a service.
    pub fn validate(&self) -> Result<()> {
        validate_id("job id", &self.id)?;
        let at = |e: String| Error::invalid(format!("job {:?}: {e}", self.id));
        match &self.pool_info.auto_pool_specification {
            None => validate_id("poolInfo.poolId", &self.pool_info.pool_id).map_err(|e| at(e.to_string()))?,
            Some(auto) => {
                if auto.pool_lifetime_option == PoolLifetimeOption::JobSchedule {
                    return Err(at("poolInfo.autoPoolSpecification.poolLifetimeOption: jobSchedule (a pool kept for a schedule's jobs) is not provided yet; use job".into()));
                }
                if let Some(prefix) = &auto.auto_pool_id_prefix {
                    validate_id("poolInfo.autoPoolSpecification.autoPoolIdPrefix", prefix)
                        .map_err(|e| at(e.to_string()))?;
                }
                let pool = auto.pool_for(&self.id).map_err(|e| at(e.to_string()))?;
                crate::autoscale::validate_pool(&pool)
                    .map_err(|e| at(format!("poolInfo.autoPoolSpecification.pool: {e}")))?;
            }
        }
        if let Some(p) = self.priority {
            if !(-1000..=1000).contains(&p) {
                return Err(at(format!("priority {p}: must be between -1000 and 1000")));
            }
        }
        if matches!(self.max_parallel_tasks, Some(n) if n < -1 || n == 0) {
            return Err(at("maxParallelTasks: must be -1 (unlimited) or at least 1".into()));
        }
        if matches!(self.constraints.as_ref().and_then(|c| c.max_task_retry_count), Some(n) if n < -1) {
            return Err(at("constraints.maxTaskRetryCount: must be -1 (unlimited) or more".into()));
        }
        validate_env("commonEnvironmentSettings", &self.common_environment_settings).map_err(|e| at(e.to_string()))?;
        if let Some(m) = &self.job_manager_task {
            // Checked as the task it becomes (slots against the pool when it is added).
            m.task(1).validate().map_err(|e| at(format!("jobManagerTask: {e}")))?;
        }
        if let Some(p) = &self.job_preparation_task {
            super::check_command("jobPreparationTask", &p.command_line, &p.resource_files).map_err(at)?;
            validate_env("jobPreparationTask.environmentSettings", &p.environment_settings)
                .map_err(|e| at(e.to_string()))?;
        }
        if let Some(r) = &self.job_release_task {
            super::check_command("jobReleaseTask", &r.command_line, &r.resource_files).map_err(at)?;
            validate_env("jobReleaseTask.environmentSettings", &r.environment_settings)
                .map_err(|e| at(e.to_string()))?;
            if self.job_preparation_task.is_none() {
                return Err(
                    at("jobReleaseTask: needs a jobPreparationTask (it runs where the preparation ran)".into()),
                );
            }
        }
        Ok(())
    }

    /// When the job's `constraints.maxWallClockTime` runs out, for a job created at `created` (ms).
    pub fn deadline_ms(&self, created: i64) -> Option<i64> {
        let limit = self.constraints.as_ref()?.max_wall_clock_time?;
        Some(created.saturating_add(i64::try_from(limit.0.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Whether a failed task applies its `exitConditions` job action to the job.
    pub fn performs_exit_actions(&self) -> bool {
        self.on_task_failure == Some(OnTaskFailure::PerformExitOptionsJobAction)
    }

    /// The retry limit its tasks inherit unless they set their own (-1: unlimited).
    pub fn max_task_retry_count(&self) -> i32 {
        self.constraints.as_ref().and_then(|c| c.max_task_retry_count).unwrap_or(0)
    }
}

/// What a job's disable does to its running tasks (Azure's `disableTasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DisableTasks {
    /// They are killed and run again once the job is enabled (Azure's default).
    #[default]
    Requeue,
    /// They are killed and complete as terminated.
    Terminate,
    /// They run to their end.
    Wait,
}

impl DisableTasks {
    /// The value's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DisableTasks::Requeue => "requeue",
            DisableTasks::Terminate => "terminate",
            DisableTasks::Wait => "wait",
        }
    }

    /// Reads a wire name, in any case (as Azure's clients send it).
    pub fn parse(text: &str) -> Option<Self> {
        [DisableTasks::Requeue, DisableTasks::Terminate, DisableTasks::Wait]
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(text))
    }
}

/// A job's state, as Azure names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    Active,
    Disabled,
    Terminating,
    Completed,
    Deleting,
}

impl JobState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Active => "active",
            JobState::Disabled => "disabled",
            JobState::Terminating => "terminating",
            JobState::Completed => "completed",
            JobState::Deleting => "deleting",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => JobState::Active,
            "disabled" => JobState::Disabled,
            "terminating" => JobState::Terminating,
            "completed" => JobState::Completed,
            "deleting" => JobState::Deleting,
            _ => return None,
        })
    }
}

/// A job as drover reports it (Azure's CloudJob).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudJob {
    #[serde(flatten)]
    pub spec: JobAddParameter,
    pub state: JobState,
    pub creation_time: String,
    pub state_transition_time: String,
    pub execution_info: JobExecutionInfo,
    /// drover's addition: what holds the job's waiting and blocked tasks (`job show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<DependencyReport>,
    /// Shown only when asked for (`$expand=stats`, `job show --stats`): it changes with every task.
    #[serde(skip)]
    pub stats: Statistics,
}

/// Azure's JobStatistics and TaskStatistics, from what drover records: wall clock and wait
/// times, task and retry counts. drover measures no CPU time or disk I/O per task: those read
/// zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// The entity's URL; the API fills it in.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub start_time: String,
    pub last_update_time: String,
    #[serde(rename = "userCPUTime")]
    pub user_cpu_time: String,
    #[serde(rename = "kernelCPUTime")]
    pub kernel_cpu_time: String,
    pub wall_clock_time: String,
    #[serde(rename = "readIOps")]
    pub read_iops: String,
    #[serde(rename = "writeIOps")]
    pub write_iops: String,
    #[serde(rename = "readIOGiB")]
    pub read_io_gib: f64,
    #[serde(rename = "writeIOGiB")]
    pub write_io_gib: f64,
    /// Jobs only (Azure's JobStatistics; int64 as strings, as Azure sends them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_succeeded_tasks: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_failed_tasks: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_task_retries: Option<String>,
    pub wait_time: String,
}

impl Statistics {
    /// Statistics over `[start_ms, now]` with these totals (ms); no counts (a task's).
    pub fn new(start_ms: i64, last_update_ms: i64, wall_ms: i64, wait_ms: i64) -> Statistics {
        let duration =
            |ms: i64| IsoDuration(std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string();
        Statistics {
            url: String::new(),
            start_time: super::rfc3339(start_ms),
            last_update_time: super::rfc3339(last_update_ms),
            user_cpu_time: duration(0),
            kernel_cpu_time: duration(0),
            wall_clock_time: duration(wall_ms),
            read_iops: "0".into(),
            write_iops: "0".into(),
            read_io_gib: 0.0,
            write_io_gib: 0.0,
            num_succeeded_tasks: None,
            num_failed_tasks: None,
            num_task_retries: None,
            wait_time: duration(wait_ms),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionInfo {
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminate_reason: Option<String>,
}

/// Azure's TaskCountsResult: how many tasks (and slots) are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCountsResult {
    pub task_counts: TaskCounts,
    pub task_slot_counts: TaskCounts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    pub active: u64,
    pub running: u64,
    pub completed: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl TaskCounts {
    /// Every task there is (active, running and completed).
    pub fn total(&self) -> u64 {
        self.active + self.running + self.completed
    }
}

/// A job's state and counts, as `job wait` polls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    pub state: JobState,
    pub counts: TaskCountsResult,
    /// Active tasks whose parents have not all completed.
    pub waiting: u64,
    /// Active tasks a failed parent blocks (they never run unless terminated).
    pub blocked: u64,
}

impl JobProgress {
    /// Whether nothing can move any more without the user: no task runs, and every active task
    /// waits on a parent that is not coming or is blocked.
    pub fn stuck(&self) -> bool {
        let t = &self.counts.task_counts;
        t.running == 0 && t.active > 0 && t.active == self.waiting + self.blocked
    }
}

/// drover's addition to CloudJob (`dependencies`): the tasks held by their dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyReport {
    /// Tasks waiting for parents that have not completed.
    pub waiting: usize,
    /// Tasks blocked by a parent that failed (its dependencyAction is block).
    pub blocked: usize,
    /// Some of them (the first by id), with what holds each.
    pub tasks: Vec<HeldTask>,
    /// Tasks that wait on each other, each cycle as a path `a -> b -> ... -> a`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cycles: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldTask {
    pub task_id: String,
    /// The failed parent that blocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// How many parents it still waits for.
    #[serde(skip_serializing_if = "is_zero")]
    pub waiting_on_count: usize,
    /// Some of those parents (that exist in the job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<String>,
    /// Parents that are not in the job (yet): ids that may never arrive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
