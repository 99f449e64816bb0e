//! Compute nodes: the workers of a pool, as Azure's ComputeNode reports them.

use super::task::{FailureInfo, TaskState};
use serde::{Deserialize, Serialize};

/// A node's state, as Azure names them (the ones that apply to a worker process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeState {
    /// Registered, setting up.
    Starting,
    /// Running the pool's start task before it takes any task (waitForSuccess).
    WaitingForStartTask,
    /// The start task failed (waitForSuccess): the node takes no task.
    StartTaskFailed,
    /// Takes tasks, runs none.
    Idle,
    /// Runs at least one task.
    Running,
    /// Told to stop: takes no new task, finishes (or hands back) what it runs.
    LeavingPool,
    /// Told to restart (Azure's reboot): leaves as `leavingPool` does, then its actuator starts
    /// it again under the same id.
    Rebooting,
    /// Its heartbeat lapsed: presumed dead.
    Offline,
    /// Cannot run tasks (e.g. its work directory is unusable).
    Unusable,
    /// Reaches no broker node: takes no new task until it reconnects (what it runs goes on).
    Unknown,
}

impl NodeState {
    /// Every state.
    pub const ALL: [NodeState; 10] = [
        NodeState::Starting,
        NodeState::WaitingForStartTask,
        NodeState::StartTaskFailed,
        NodeState::Idle,
        NodeState::Running,
        NodeState::LeavingPool,
        NodeState::Rebooting,
        NodeState::Offline,
        NodeState::Unusable,
        NodeState::Unknown,
    ];

    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::WaitingForStartTask => "waitingForStartTask",
            NodeState::StartTaskFailed => "startTaskFailed",
            NodeState::Idle => "idle",
            NodeState::Running => "running",
            NodeState::LeavingPool => "leavingPool",
            NodeState::Rebooting => "rebooting",
            NodeState::Offline => "offline",
            NodeState::Unusable => "unusable",
            NodeState::Unknown => "unknown",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        NodeState::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

/// How many of a pool's nodes are in each state (Azure's PoolNodeCounts: drover's nodes are all
/// dedicated; states drover has no use for read zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolNodeCounts {
    pub pool_id: String,
    pub dedicated: std::collections::BTreeMap<&'static str, u32>,
    pub low_priority: std::collections::BTreeMap<&'static str, u32>,
}

impl PoolNodeCounts {
    /// The counts of `nodes`, the nodes of `pool_id`.
    pub fn of(pool_id: &str, nodes: &[ComputeNode]) -> PoolNodeCounts {
        let zero = || {
            let unused = ["creating", "preempted", "reimaging", "deallocated", "deallocating", "upgradingOS", "total"];
            NodeState::ALL.iter().map(|s| s.as_str()).chain(unused).map(|name| (name, 0)).collect()
        };
        let mut dedicated: std::collections::BTreeMap<&'static str, u32> = zero();
        for node in nodes {
            *dedicated.entry(node.state.as_str()).or_default() += 1;
            *dedicated.entry("total").or_default() += 1;
        }
        PoolNodeCounts { pool_id: pool_id.into(), dedicated, low_priority: zero() }
    }
}

/// A node as drover reports it (Azure's ComputeNode; `hostName`, `taskSlots` and
/// `lastHeartbeatTime` are drover's additions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeNode {
    pub id: String,
    pub pool_id: String,
    pub state: NodeState,
    pub state_transition_time: String,
    /// `enabled`, or `disabled` after Azure's disable scheduling (the node takes no new task).
    pub scheduling_state: String,
    pub last_boot_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
    pub host_name: String,
    pub task_slots: u32,
    pub running_tasks_count: u32,
    pub running_task_slots_count: u32,
    pub total_tasks_run: u64,
    pub total_tasks_succeeded: u64,
    /// The tasks it runs now.
    pub recent_tasks: Vec<TaskInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task_info: Option<StartTaskInformation>,
    pub node_agent_info: NodeAgentInformation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInformation {
    pub job_id: String,
    pub task_id: String,
    pub task_state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentInformation {
    pub version: String,
}

/// How the pool's start task ran on a node (Azure's StartTaskInformation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTaskInformation {
    /// `running` or `completed`.
    pub state: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
    pub retry_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// What a node does with the tasks it runs when it stops taking tasks: its scheduling disabled
/// (Azure's `nodeDisableSchedulingOption`), removed from its pool (`nodeDeallocationOption`) or
/// restarted (`nodeRebootOption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TasksOption {
    /// Kill them and hand them back to the queue (Azure's default).
    #[default]
    Requeue,
    /// Kill them: they complete as terminated.
    Terminate,
    /// Let them finish (`retaineddata` too: a node keeps its task directories anyway).
    TaskCompletion,
}

impl TasksOption {
    /// The option's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TasksOption::Requeue => "requeue",
            TasksOption::Terminate => "terminate",
            TasksOption::TaskCompletion => "taskcompletion",
        }
    }

    /// Reads a wire name, in any case (`retaineddata` is `taskcompletion`).
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("retaineddata") {
            return Some(TasksOption::TaskCompletion);
        }
        [TasksOption::Requeue, TasksOption::Terminate, TasksOption::TaskCompletion]
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(text))
    }
}

/// An order a node carries out itself when its heartbeat reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOrder {
    /// Leave the pool for good (Azure's remove nodes).
    Remove(TasksOption),
    /// Leave, and be started again by the actuator that runs it (Azure's reboot).
    Reboot(TasksOption),
}

impl NodeOrder {
    /// The order as stored: `remove:<option>` or `reboot:<option>`.
    pub fn to_text(self) -> String {
        match self {
            NodeOrder::Remove(o) => format!("remove:{}", o.as_str()),
            NodeOrder::Reboot(o) => format!("reboot:{}", o.as_str()),
        }
    }

    /// Reads a stored order.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, option) = text.split_once(':')?;
        let option = TasksOption::parse(option)?;
        match kind {
            "remove" => Some(NodeOrder::Remove(option)),
            "reboot" => Some(NodeOrder::Reboot(option)),
            _ => None,
        }
    }

    /// What the node does with its running tasks.
    pub fn option(self) -> TasksOption {
        match self {
            NodeOrder::Remove(o) | NodeOrder::Reboot(o) => o,
        }
    }
}
