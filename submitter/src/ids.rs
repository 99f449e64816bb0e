//! The ids that name what a command acts on, described once for every command's help.

/// A job, by id.
#[derive(clap::Args, Debug)]
pub(crate) struct JobId {
    /// The job's id (as given to `drover job create`).
    #[arg(long, value_name = "JOB")]
    pub(crate) job_id: String,
}

/// A task of a job, by ids.
#[derive(clap::Args, Debug)]
pub(crate) struct TaskId {
    /// The job the task belongs to.
    #[arg(long, value_name = "JOB")]
    pub(crate) job_id: String,
    /// The task's id, unique within its job (as given to `drover task create`).
    #[arg(long, value_name = "TASK")]
    pub(crate) task_id: String,
}

/// A pool, by id.
#[derive(clap::Args, Debug)]
pub(crate) struct PoolId {
    /// The pool's id (as given to `drover pool create`).
    #[arg(long, value_name = "POOL")]
    pub(crate) pool_id: String,
}
