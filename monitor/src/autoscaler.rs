//! The autoscaler: every second it samples the backlog of each pool that autoscales (or has a
//! fixed `targetDedicatedNodes`), evaluates the pool's formula at its evaluation interval, records
//! the run, and has the actuator start or stop workers.

use crate::actuator::{Actuator, Leave};
use drover_core::autoscale::{self, Sample, MAX_SAMPLES};
use drover_core::model::CloudPool;
use drover_core::status::StatusStore;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often pools are sampled (the formula's sample period).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct PoolState {
    samples: VecDeque<Sample>,
    last_evaluation: Option<Instant>,
    /// The target it scales to (within the limits).
    target: u32,
    /// The target the pool asked for when the limits cut it.
    cut: Option<u32>,
}

/// The most workers the autoscaler runs: per pool, and for all pools together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) pool: u32,
    pub(crate) total: u32,
}

pub(crate) async fn run(store: StatusStore, mut actuator: Actuator, limits: Limits, shutdown: CancellationToken) {
    let mut pools: HashMap<String, PoolState> = HashMap::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let list = match store.list_pools().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pools");
                continue;
            }
        };
        // Pools take from the total in the order they are listed.
        let mut budget = limits.total;
        for pool in list.iter().filter(|p| p.spec.autoscales() || p.spec.target_dedicated_nodes.is_some()) {
            let state = pools.entry(pool.spec.id.clone()).or_default();
            let cap = limits.pool.min(budget);
            let held = match step(&store, &mut actuator, pool, state, cap).await {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(pool = %pool.spec.id, error = %e, "autoscale step failed");
                    actuator.held(&pool.spec.id).await
                }
            };
            budget = budget.saturating_sub(held);
        }
        pools.retain(|id, _| list.iter().any(|p| p.spec.id == *id));
    }
    actuator.shutdown().await;
}

/// `target` within `cap`, with a warning when it is cut (once per new value).
fn capped(pool: &str, target: u32, cap: u32, state: &mut PoolState) -> u32 {
    let capped = target.min(cap);
    let cut = (capped < target).then_some(target);
    if cut.is_some() && cut != state.cut {
        tracing::warn!(
            pool,
            target,
            running = capped,
            "the pool asks for more workers than drover-monitor's limits (--max-pool-nodes, --max-nodes) allow"
        );
    }
    state.cut = cut;
    capped
}

/// Brings one pool to its target, within `cap` workers; returns the target it scaled to.
async fn step(
    store: &StatusStore,
    actuator: &mut Actuator,
    pool: &CloudPool,
    state: &mut PoolState,
    cap: u32,
) -> drover_core::Result<u32> {
    let id = &pool.spec.id;
    let Some(formula) = pool.spec.auto_scale_formula.as_deref().filter(|_| pool.spec.autoscales()) else {
        let target = capped(id, pool.spec.target_dedicated_nodes.unwrap_or(0), cap, state);
        actuator.scale(store, id, target, Leave::Drain).await;
        return Ok(target);
    };
    let sample = store.pool_sample(id).await?;
    store.record_sample(id, &sample).await?;
    state.samples.push_back(sample);
    while state.samples.len() > MAX_SAMPLES {
        state.samples.pop_front();
    }
    if state.last_evaluation.is_some_and(|t| t.elapsed() < pool.spec.evaluation_interval()) {
        return Ok(state.target);
    }
    state.last_evaluation = Some(Instant::now());
    let current = actuator.current(store, id).await;
    let samples: Vec<Sample> = state.samples.iter().copied().collect();
    let inputs =
        autoscale::inputs(&samples, SAMPLE_EVERY.as_secs_f64(), current, pool.spec.task_slots_per_node, state.target);
    let run = autoscale::evaluate(formula, &inputs);
    store.record_autoscale(id, &run).await?;
    match (&run.error, run.target_dedicated_nodes) {
        (Some(e), _) => {
            tracing::warn!(pool = %id, code = %e.code, error = %e.message, "autoscale formula failed; pool left as it is")
        }
        (None, None) => tracing::warn!(pool = %id, "the autoscale formula sets no $TargetDedicatedNodes"),
        (None, Some(target)) => {
            state.target = capped(id, target, cap, state);
            let leave = Leave::from_option(run.node_deallocation_option.as_deref());
            actuator.scale(store, id, state.target, leave).await;
        }
    }
    Ok(state.target)
}
