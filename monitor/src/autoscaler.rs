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
    target: u32,
}

pub(crate) async fn run(store: StatusStore, mut actuator: Actuator, shutdown: CancellationToken) {
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
        for pool in list.iter().filter(|p| p.spec.autoscales() || p.spec.target_dedicated_nodes.is_some()) {
            let state = pools.entry(pool.spec.id.clone()).or_default();
            if let Err(e) = step(&store, &mut actuator, pool, state).await {
                tracing::warn!(pool = %pool.spec.id, error = %e, "autoscale step failed");
            }
        }
        pools.retain(|id, _| list.iter().any(|p| p.spec.id == *id));
    }
    actuator.shutdown().await;
}

async fn step(
    store: &StatusStore,
    actuator: &mut Actuator,
    pool: &CloudPool,
    state: &mut PoolState,
) -> drover_core::Result<()> {
    let id = &pool.spec.id;
    let Some(formula) = pool.spec.auto_scale_formula.as_deref().filter(|_| pool.spec.autoscales()) else {
        let target = pool.spec.target_dedicated_nodes.unwrap_or(0);
        actuator.scale(store, id, target, Leave::Drain).await;
        return Ok(());
    };
    let sample = store.pool_sample(id).await?;
    store.record_sample(id, &sample).await?;
    state.samples.push_back(sample);
    while state.samples.len() > MAX_SAMPLES {
        state.samples.pop_front();
    }
    if state.last_evaluation.is_some_and(|t| t.elapsed() < pool.spec.evaluation_interval()) {
        return Ok(());
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
            state.target = target;
            actuator.scale(store, id, target, Leave::from_option(run.node_deallocation_option.as_deref())).await;
        }
    }
    Ok(())
}
