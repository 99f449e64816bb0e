//! The autoscaler: every second it samples the backlog of each pool that autoscales (or has a
//! fixed `targetDedicatedNodes`), evaluates the pool's formula at its evaluation interval, records
//! the run, and has the actuator start or stop workers. An auto pool whose job has completed is
//! scaled to nothing and removed.

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

/// How long an auto pool may wait for the job it was made for (`drover job create` makes the
/// pool first, then the job).
const AUTO_POOL_GRACE_MS: i64 = 60_000;

pub(crate) async fn run(
    store: StatusStore,
    mut actuator: Actuator,
    limits: Limits,
    broker: drover_core::queue::Broker,
    account: String,
    shutdown: CancellationToken,
) {
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
        let mut retiring = Vec::new();
        for pool in list.iter().filter(|p| p.auto_pool_job.is_some()) {
            if retire(&store, &mut actuator, pool, &broker, &account).await {
                retiring.push(pool.spec.id.clone());
            }
        }
        let scaled = |p: &&CloudPool| p.spec.autoscales() || p.spec.target_dedicated_nodes.is_some();
        for pool in list.iter().filter(scaled).filter(|p| !retiring.contains(&p.spec.id)) {
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

/// Whether `pool` is an auto pool whose job has completed (or was deleted, or never came): its
/// workers are stopped, then its queues and record removed.
async fn retire(
    store: &StatusStore,
    actuator: &mut Actuator,
    pool: &CloudPool,
    broker: &drover_core::queue::Broker,
    account: &str,
) -> bool {
    let (Some(job), id) = (&pool.auto_pool_job, &pool.spec.id) else { return false };
    let done = match store.get_job(job).await {
        Ok(j) => j.state == drover_core::model::JobState::Completed,
        Err(drover_core::Error::NotFound { .. }) => drover_core::model::now_ms() - pool.ctime_ms > AUTO_POOL_GRACE_MS,
        Err(_) => false,
    };
    if !done {
        return false;
    }
    actuator.scale(store, id, 0, crate::actuator::Leave::Drain).await;
    if actuator.held(id).await > 0 {
        return true;
    }
    let topology = drover_core::queue::Topology::new(account);
    let queues = async {
        let connection = drover_core::queue::connect(broker, "drover-monitor").await?;
        let channel = connection.create_channel().await?;
        let deleted = topology.delete_pool(&channel, id).await;
        let _ = connection.close(200, "bye".into()).await;
        deleted
    };
    if let Err(e) = queues.await {
        let queue = topology.pool_queue(id);
        tracing::warn!(pool = %id, error = %e, "cannot delete the auto pool's queues (the monitor's broker user needs configure on them): delete {queue} and its .high and .low with rabbitmqctl delete_queue");
    }
    match store.delete_pool(id).await {
        Ok(()) => tracing::info!(pool = %id, job = %job, "auto pool removed: its job has completed"),
        Err(e) => tracing::warn!(pool = %id, error = %e, "cannot remove the auto pool"),
    }
    true
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
