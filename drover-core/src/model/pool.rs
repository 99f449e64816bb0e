//! Pools: a named set of nodes with their own queue (Azure's PoolAddParameter, drover's parts).

use super::task::{ApplicationPackageReference, ResourceFile};
use super::{validate_env, validate_id, EnvironmentSetting, IsoDuration, MetadataItem};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A pool to create.
/// The most nodes a pool may ask for (`targetDedicatedNodes`); the autoscaler has its own,
/// lower limits (`drover-monitor --max-pool-nodes`, `--max-nodes`).
pub const MAX_POOL_NODES: u32 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolAddParameter {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Accepted for Azure compatibility; drover's nodes are whatever machines run workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    /// `maxTasksPerNode` is its older name.
    #[serde(default = "one", alias = "maxTasksPerNode")]
    pub task_slots_per_node: u32,
    /// Runs on each node as it joins the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task: Option<StartTask>,
    /// How many workers the autoscaler keeps running when autoscaling is off (absent: it leaves
    /// the pool alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dedicated_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_scale: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scale_formula: Option<String>,
    /// How often the formula is evaluated (default PT15S, at least PT1S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scale_evaluation_interval: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataItem>,
    /// Users its commands may name in `userIdentity.userName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_accounts: Vec<super::UserAccount>,
    /// How its tasks fill its nodes (Azure's `nodeFillType`; spread by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_scheduling_policy: Option<TaskSchedulingPolicy>,
    // Cloud provisioning, accepted and kept, without effect on drover's nodes (`fields::KINDS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_configuration: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_service_configuration: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_timeout: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_tags: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_low_priority_nodes: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_spot_nodes: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_inter_node_communication: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_communication_mode: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_licenses: Option<serde_json::Value>,
}

/// Azure's TaskSchedulingPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSchedulingPolicy {
    #[serde(default)]
    pub node_fill_type: NodeFillType,
}

/// `spread` hands tasks to every node with a free slot in turn; `pack` fills the longest-joined
/// node's slots before the next node takes a task (so the newest nodes idle and can be retired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeFillType {
    #[default]
    Spread,
    Pack,
}

/// Azure's StartTask: runs on a node when it joins the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartTask {
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    /// Reruns after a failure (-1: until it succeeds; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
    /// Whether the node takes no task until the start task has succeeded (default true). A node
    /// whose start task failed then takes none at all (`startTaskFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_success: Option<bool>,
    /// drover's addition: application packages for the start task, as on tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_package_references: Vec<ApplicationPackageReference>,
    /// Who it runs as (default: a non-admin auto-user of pool scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<super::UserIdentity>,
}

/// The default and smallest autoscale evaluation intervals.
pub const DEFAULT_AUTOSCALE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);
pub const MIN_AUTOSCALE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn one() -> u32 {
    1
}

impl PoolAddParameter {
    /// Whether its nodes fill one at a time (`nodeFillType: pack`).
    pub fn packs(&self) -> bool {
        self.task_scheduling_policy.is_some_and(|p| p.node_fill_type == NodeFillType::Pack)
    }

    /// A pool with just an id and its slots per node.
    pub fn new(id: &str, task_slots_per_node: u32) -> Self {
        PoolAddParameter { id: id.into(), task_slots_per_node, ..Default::default() }
    }

    /// Whether the pool's size follows its autoscale formula.
    pub fn autoscales(&self) -> bool {
        self.enable_auto_scale == Some(true)
    }

    /// How often the autoscale formula is evaluated.
    pub fn evaluation_interval(&self) -> std::time::Duration {
        self.auto_scale_evaluation_interval.map_or(DEFAULT_AUTOSCALE_INTERVAL, |d| d.0)
    }

    /// Checks every field drover can check without touching a service, except the formula's
    /// syntax: `autoscale::validate_pool` checks both.
    pub fn validate(&self) -> Result<()> {
        validate_id("pool id", &self.id)?;
        if !(1..=256).contains(&self.task_slots_per_node) {
            return Err(Error::invalid(format!(
                "pool {:?}: taskSlotsPerNode {}: must be between 1 and 256",
                self.id, self.task_slots_per_node
            )));
        }
        let at = |e: String| Error::invalid(format!("pool {:?}: {e}", self.id));
        if let Some(t) = &self.start_task {
            super::check_command("startTask", &t.command_line, &t.resource_files).map_err(at)?;
            validate_env("startTask.environmentSettings", &t.environment_settings).map_err(|e| at(e.to_string()))?;
            if matches!(t.max_task_retry_count, Some(n) if n < -1) {
                return Err(at("startTask.maxTaskRetryCount: must be -1 (unlimited) or more".into()));
            }
        }
        for (i, account) in self.user_accounts.iter().enumerate() {
            account.validate().map_err(|e| at(format!("userAccounts[{i}] {e}")))?;
            if self.user_accounts[..i].iter().any(|a| a.name == account.name) {
                return Err(at(format!("userAccounts[{i}]: {:?} is named twice", account.name)));
            }
        }
        if let Some(identity) = self.start_task.as_ref().and_then(|t| t.user_identity.as_ref()) {
            identity.validate().map_err(|e| at(format!("startTask.{e}")))?;
            super::UserIdentity::run_as(Some(identity), &self.user_accounts)
                .map_err(|e| at(format!("startTask.{e}")))?;
        }
        if let Some(n) = self.target_dedicated_nodes.filter(|n| *n > MAX_POOL_NODES) {
            return Err(at(format!("targetDedicatedNodes {n}: at most {MAX_POOL_NODES} nodes in a pool")));
        }
        if self.autoscales() {
            let formula = self.auto_scale_formula.as_deref().unwrap_or_default();
            if formula.trim().is_empty() {
                return Err(at("autoScaleFormula: required when enableAutoScale is true".into()));
            }
            if self.target_dedicated_nodes.is_some() {
                return Err(at("targetDedicatedNodes: not allowed when enableAutoScale is true".into()));
            }
        } else if self.auto_scale_formula.is_some() {
            return Err(at("autoScaleFormula: needs enableAutoScale true".into()));
        }
        if self.evaluation_interval() < MIN_AUTOSCALE_INTERVAL {
            return Err(at("autoScaleEvaluationInterval: must be at least PT1S".into()));
        }
        Ok(())
    }
}

/// A pool as drover reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudPool {
    #[serde(flatten)]
    pub spec: PoolAddParameter,
    pub state: &'static str,
    pub creation_time: String,
    /// Live nodes (`pool show` and `pool list` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_dedicated_nodes: Option<u32>,
    /// `steady`, or `resizing` while the live nodes are not what the pool asks for (`pool show`
    /// and `pool list` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_state: Option<&'static str>,
    /// The last autoscale evaluation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_scale_run: Option<AutoScaleRun>,
    /// The job whose auto pool it is, when it goes once that job has completed.
    #[serde(skip)]
    pub auto_pool_job: Option<String>,
    /// When it was created (ms since the epoch).
    #[serde(skip)]
    pub ctime_ms: i64,
}

/// One evaluation of a pool's formula (Azure's AutoScaleRun, plus what drover decided).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoScaleRun {
    pub timestamp: String,
    /// Every assignment, `$name=value;...`, as Azure prints them.
    pub results: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dedicated_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_deallocation_option: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AutoScaleRunError>,
}

/// Why an evaluation failed: its code and the formula's error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoScaleRunError {
    pub code: String,
    pub message: String,
}
