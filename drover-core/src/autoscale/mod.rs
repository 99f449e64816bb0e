//! Autoscaling: the Azure Batch formula language ([`Formula`]), the samples it reads (a pool's
//! backlog; `status` takes and keeps them), the pool check and one evaluation (Azure's
//! AutoScaleRun). Nothing here touches a service.

mod formula;

pub use formula::{Evaluation, Formula, FormulaError, Inputs, Value};

use crate::model::pool::{AutoScaleRun, AutoScaleRunError};
use crate::model::{now_ms, rfc3339, PoolAddParameter};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The most samples kept per pool (an hour at one a second).
pub const MAX_SAMPLES: usize = 3600;

/// A pool's backlog at one moment. Tasks held by their dependencies are not counted: no node
/// could run them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When (ms).
    pub t: i64,
    pub active: u64,
    pub running: u64,
    pub active_slots: u64,
    pub running_slots: u64,
}

/// The series a formula reads, named as Azure names them, plus drover's slot-aware ones.
const SERIES: [&str; 6] =
    ["PendingTasks", "ActiveTasks", "RunningTasks", "PendingTaskSlots", "ActiveTaskSlots", "RunningTaskSlots"];

impl Sample {
    fn values(&self) -> [u64; 6] {
        [
            self.active + self.running,
            self.active,
            self.running,
            self.active_slots + self.running_slots,
            self.active_slots,
            self.running_slots,
        ]
    }
}

/// The formula's inputs from a pool's samples (oldest first): the series above, and
/// `$CurrentDedicatedNodes`, `$TaskSlotsPerNode` and `$TargetDedicatedNodes` (its current value).
pub fn inputs(samples: &[Sample], period_secs: f64, nodes: u32, slots_per_node: u32, target: u32) -> Inputs {
    let mut series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for s in samples {
        for (name, v) in SERIES.iter().zip(s.values()) {
            series.entry((*name).to_string()).or_default().push((s.t as f64 / 1000.0, v as f64));
        }
    }
    let variables = HashMap::from([
        ("CurrentDedicatedNodes".to_string(), f64::from(nodes)),
        ("TaskSlotsPerNode".to_string(), f64::from(slots_per_node)),
        ("TargetDedicatedNodes".to_string(), f64::from(target)),
    ]);
    Inputs { now: now_ms() as f64 / 1000.0, sample_period: period_secs, series, variables }
}

/// Checks a pool before it is written: [`PoolAddParameter::validate`], and that its
/// `autoScaleFormula` parses (the error names its line and column).
pub fn validate_pool(pool: &PoolAddParameter) -> Result<()> {
    pool.validate()?;
    if let Some(formula) = pool.auto_scale_formula.as_deref().filter(|_| pool.autoscales()) {
        Formula::parse(formula).map_err(|e| Error::invalid(format!("pool {:?}: autoScaleFormula: {e}", pool.id)))?;
    }
    Ok(())
}

/// Parses and evaluates `formula`; errors are reported in the run, with their position.
pub fn evaluate(formula: &str, inputs: &Inputs) -> AutoScaleRun {
    let timestamp = rfc3339(now_ms());
    let failed = |code: &str, e: FormulaError| AutoScaleRun {
        timestamp: timestamp.clone(),
        results: String::new(),
        target_dedicated_nodes: None,
        node_deallocation_option: None,
        error: Some(AutoScaleRunError { code: code.into(), message: e.to_string() }),
    };
    let parsed = match Formula::parse(formula) {
        Ok(f) => f,
        Err(e) => return failed("InvalidAutoScaleFormula", e),
    };
    match parsed.evaluate(inputs) {
        Ok(eval) => AutoScaleRun {
            timestamp: timestamp.clone(),
            results: eval.assignments.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";"),
            target_dedicated_nodes: eval.target_dedicated_nodes.map(|t| t.round().clamp(0.0, u32::MAX as f64) as u32),
            node_deallocation_option: eval.node_deallocation_option,
            error: None,
        },
        Err(e) => failed("AutoScaleFormulaEvaluationError", e),
    }
}
