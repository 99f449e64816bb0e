//! Autoscaling: the Azure Batch formula language ([`Formula`]), the samples it reads (a pool's
//! backlog, taken from the counters of its active jobs), and one evaluation (Azure's AutoScaleRun).

mod formula;

pub use formula::{Evaluation, Formula, FormulaError, Inputs, Value};

use crate::model::pool::{AutoScaleRun, AutoScaleRunError};
use crate::model::{now_ms, rfc3339, PoolAddParameter};
use crate::status::StatusStore;
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

impl StatusStore {
    /// The backlog of a pool now: the counters of its active jobs, minus their held tasks (one
    /// round trip; O(active jobs of the pool), never a scan of tasks).
    pub async fn pool_sample(&self, pool: &str) -> Result<Sample> {
        let jobs = self.pool_jobs(pool).await?;
        let mut sample = Sample { t: now_ms(), ..Default::default() };
        if jobs.is_empty() {
            return Ok(sample);
        }
        let rows = self.job_backlogs(&jobs).await?;
        for b in rows {
            let held = b.held.min(b.active);
            sample.active += b.active - held;
            sample.running += b.running;
            sample.active_slots += b.active_slots.saturating_sub(held);
            sample.running_slots += b.running_slots;
        }
        Ok(sample)
    }
}

impl StatusStore {
    /// Keeps a sample of a pool (the last [`MAX_SAMPLES`]), so that `pool autoscale evaluate`
    /// sees the history the autoscaler sees.
    pub async fn record_sample(&self, pool: &str, sample: &Sample) -> Result<()> {
        let key = self.keys().pool_part(pool, "samples");
        let _: () = redis::pipe()
            .cmd("LPUSH")
            .arg(&key)
            .arg(serde_json::to_string(sample).unwrap_or_default())
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(MAX_SAMPLES - 1)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// A pool's recorded samples, oldest first.
    pub async fn samples(&self, pool: &str) -> Result<Vec<Sample>> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys().pool_part(pool, "samples"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        Ok(raw.iter().rev().filter_map(|s| serde_json::from_str(s).ok()).collect())
    }

    /// Records the last autoscale evaluation of a pool.
    pub async fn record_autoscale(&self, pool: &str, run: &AutoScaleRun) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(self.keys().pool_part(pool, "autoscale"))
            .arg(serde_json::to_string(run).unwrap_or_default())
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The last autoscale evaluation of a pool, if any.
    pub async fn last_autoscale(&self, pool: &str) -> Result<Option<AutoScaleRun>> {
        let raw: Option<String> =
            redis::cmd("GET").arg(self.keys().pool_part(pool, "autoscale")).query_async(&mut self.con()).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }
}
