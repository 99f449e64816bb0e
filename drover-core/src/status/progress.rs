//! Why a job does not move, and which of its tasks failed: the reads behind `drover job show`'s
//! `notProgressing` and `drover job wait`'s messages. They combine the job's counters with its
//! pool's nodes; none of them reads every task of a job, except [`StatusStore::failed_tasks`],
//! which stops after its limit.

use super::StatusStore;
use crate::model::job::JobProgress;
use crate::model::node::NodeState;
use crate::model::task::TaskResult;
use crate::model::{CloudTask, JobState, TaskState};
use crate::Result;
use serde::Serialize;

/// drover's addition to `job show` (`notProgressing`): why an active job's tasks do not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    pub reason: StallReason,
    /// What holds the job and what to do about it, in one sentence.
    pub message: String,
}

/// What holds a job's tasks back, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StallReason {
    /// Every active task waits on a parent that failed or is not coming, and none runs.
    HeldByDependencies,
    /// The pool's nodes all failed their start task: none takes tasks.
    StartTaskFailed,
    /// No node consumes the pool's queue.
    NoLiveNode,
    /// Tasks wait because the job already runs `maxParallelTasks` of them.
    MaxParallelTasks,
}

/// A pool's nodes as far as taking tasks goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolNodes {
    /// Nodes that take tasks now or will once started (heartbeating, not leaving, not failed).
    pub live: usize,
    /// Heartbeating nodes whose start task failed: they take no task.
    pub start_task_failed: usize,
    /// Whether the pool's size follows its autoscale formula.
    pub autoscale: bool,
}

/// What [`Stall::of`] weighs: the job's counters, its pool's nodes, its parked tasks.
#[derive(Debug, Clone, Copy)]
pub struct JobOutlook<'a> {
    pub job: &'a str,
    pub pool: &'a str,
    pub progress: &'a JobProgress,
    pub nodes: PoolNodes,
    /// Tasks parked by `maxParallelTasks`.
    pub parked: u64,
    pub max_parallel_tasks: Option<i32>,
}

impl Stall {
    /// Why the job does not progress, or None when it does (or has ended, or has nothing to
    /// start).
    pub fn of(o: &JobOutlook<'_>) -> Option<Stall> {
        let t = &o.progress.counts.task_counts;
        if o.progress.state != JobState::Active || t.active == 0 {
            return None;
        }
        let (job, pool) = (o.job, o.pool);
        if o.progress.stuck() {
            let (blocked, waiting) = (o.progress.blocked, o.progress.waiting);
            return Some(Stall {
                reason: StallReason::HeldByDependencies,
                message: format!(
                    "every active task is held by its dependencies and none runs: {} by failed parents, {} on tasks that are not coming",
                    are(blocked, "blocked"),
                    are(waiting, "waiting"),
                ),
            });
        }
        let held = o.progress.waiting + o.progress.blocked;
        let startable = t.active.saturating_sub(held);
        if startable > 0 && o.nodes.live == 0 {
            if o.nodes.start_task_failed > 0 {
                return Some(Stall {
                    reason: StallReason::StartTaskFailed,
                    message: format!(
                        "no node of pool {pool} takes tasks: the start task failed on {} (see drover node list --pool-id {pool})",
                        count(o.nodes.start_task_failed as u64, "node", "nodes")
                    ),
                });
            }
            let start = if o.nodes.autoscale {
                "the pool autoscales: is drover-monitor --autoscale running?".to_string()
            } else {
                format!(
                    "start one with drover-worker --pool-id {pool}, or let the pool autoscale (drover pool autoscale enable --pool-id {pool} --formula F, with drover-monitor --autoscale)"
                )
            };
            return Some(Stall {
                reason: StallReason::NoLiveNode,
                message: format!(
                    "pool {pool} has no live node, so none of job {job}'s {} can start: {start}",
                    count(startable, "task", "tasks")
                ),
            });
        }
        if o.parked > 0 {
            let cap = o.max_parallel_tasks.map_or_else(|| "its".to_string(), |n| n.to_string());
            return Some(Stall {
                reason: StallReason::MaxParallelTasks,
                message: format!(
                    "{} parked: the job runs at most maxParallelTasks = {cap} at once; one starts as each running task ends",
                    are(o.parked, "task")
                ),
            });
        }
        None
    }
}

/// `1 task`, `2 tasks`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1 is blocked`, `2 are blocked`; for a noun: `1 task is`, `2 tasks are`.
fn are(n: u64, what: &str) -> String {
    match (what, n) {
        ("task", 1) => "1 task is".into(),
        ("task", n) => format!("{n} tasks are"),
        (w, 1) => format!("1 is {w}"),
        (w, n) => format!("{n} are {w}"),
    }
}

impl StatusStore {
    /// How many of `pool`'s nodes take tasks (one round trip for all of them).
    pub async fn pool_nodes(&self, pool: &str) -> Result<PoolNodes> {
        let autoscale = self.get_pool(pool).await.map(|p| p.spec.autoscales()).unwrap_or(false);
        let mut nodes = PoolNodes { autoscale, ..Default::default() };
        for node in self.list_nodes(pool).await? {
            match node.state {
                NodeState::Starting | NodeState::WaitingForStartTask | NodeState::Idle | NodeState::Running => {
                    nodes.live += 1
                }
                NodeState::StartTaskFailed => nodes.start_task_failed += 1,
                NodeState::LeavingPool
                | NodeState::Rebooting
                | NodeState::Offline
                | NodeState::Unusable
                | NodeState::Unknown => {}
            }
        }
        Ok(nodes)
    }

    /// Why `job` does not progress, or None when it does: its counters, its pool's nodes and the
    /// length of its parked list (a few round trips, whatever the job's size).
    pub async fn job_stall(&self, job: &str) -> Result<Option<Stall>> {
        let spec = self.get_job(job).await?.spec;
        let pool = spec.pool_info.pool_id.as_str();
        let progress = self.job_progress(job).await?;
        let nodes = self.pool_nodes(pool).await?;
        let parked: u64 =
            redis::cmd("LLEN").arg(self.keys.job(job).part("parked")).query_async(&mut self.con()).await?;
        Ok(Stall::of(&JobOutlook {
            job,
            pool,
            progress: &progress,
            nodes,
            parked,
            max_parallel_tasks: spec.max_parallel_tasks,
        }))
    }

    /// The first `limit` failed tasks of `job` (in the order they were added). Reads the job's
    /// completed tasks page by page and stops once it has `limit`: meant for a job known to have
    /// failures.
    pub async fn failed_tasks(&self, job: &str, limit: usize) -> Result<Vec<CloudTask>> {
        let mut failed = Vec::new();
        if limit == 0 {
            return Ok(failed);
        }
        self.for_each_task(job, Some(TaskState::Completed), |task| {
            if task.execution_info.as_ref().and_then(|e| e.result) == Some(TaskResult::Failure) {
                failed.push(task);
            }
            if failed.len() >= limit {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await?;
        Ok(failed)
    }
}
