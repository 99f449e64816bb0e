//! Pools: a named set of nodes with their own queue (Azure's PoolAddParameter, drover's parts).

use super::{validate_id, MetadataItem};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A pool to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolAddParameter {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Accepted for Azure compatibility; drover's nodes are whatever machines run workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    #[serde(default = "one")]
    pub task_slots_per_node: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataItem>,
}

fn one() -> u32 {
    1
}

impl PoolAddParameter {
    /// A pool with just an id and its slots per node.
    pub fn new(id: &str, task_slots_per_node: u32) -> Self {
        PoolAddParameter { id: id.into(), display_name: None, vm_size: None, task_slots_per_node, metadata: vec![] }
    }

    /// Checks every field drover can check without touching a service.
    pub fn validate(&self) -> Result<()> {
        validate_id("pool id", &self.id)?;
        if !(1..=256).contains(&self.task_slots_per_node) {
            return Err(Error::invalid(format!(
                "pool {:?}: taskSlotsPerNode {}: must be between 1 and 256",
                self.id, self.task_slots_per_node
            )));
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
}
