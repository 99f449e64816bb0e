//! Where a phase's CPU went: the machine's busy time per task, split into the tasks' own
//! processes, the pipeline under test, the submitter, the local broker, Redis and the rest.

use crate::farm::{self, Farm};
use anyhow::{Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

/// CPU used so far, in seconds, by each party of a phase.
#[derive(Clone, Copy)]
pub(crate) struct Counters {
    /// Every CPU's busy time (`/proc/stat`: all but idle and iowait).
    machine: f64,
    parties: Parties,
    /// The local broker's processes (`beam.smp`); None when none runs on this machine.
    broker: Option<f64>,
    /// The Redis server's (`INFO cpu`).
    redis: f64,
}

/// What the phase itself knows of its processes' CPU so far, in seconds.
#[derive(Clone, Copy)]
pub(crate) struct Parties {
    /// The tasks' own processes (`/bin/true`), as their parents reaped them.
    pub(crate) tasks: f64,
    /// The pipeline under test: the bare pipeline's process, or the workers with their task
    /// spawners.
    pub(crate) pipeline: f64,
    /// The submitter (`drover task create`), once reaped.
    pub(crate) submitter: f64,
}

/// A phase's CPU per task, in µs; `rest` is the machine's busy time that none of the others
/// account for (the kernel's threads, the monitor, this bench's own polling, other processes).
pub(crate) struct Budget {
    pub(crate) machine: f64,
    pub(crate) tasks: f64,
    pub(crate) pipeline: f64,
    pub(crate) submitter: f64,
    pub(crate) broker: Option<f64>,
    pub(crate) redis: f64,
    pub(crate) rest: f64,
}

/// Reads the counters now; `parties` are the phase's own readings of its processes.
pub(crate) async fn sample(farm: &mut Farm, parties: Parties) -> Result<Counters> {
    let ticks = farm::ticks_per_second()? as f64;
    let broker = broker_pids();
    let broker = if broker.is_empty() {
        None
    } else {
        // A broker process that exited meanwhile took its CPU with it.
        Some(broker.into_iter().map(|p| farm::cpu_ticks(p).map_or(0, |c| c.own)).sum::<u64>() as f64 / ticks)
    };
    Ok(Counters {
        machine: machine_busy_ticks()? as f64 / ticks,
        parties,
        broker,
        redis: farm.redis_cpu_seconds().await?,
    })
}

impl Budget {
    /// What was used between `before` and `after`, per task of `n`.
    pub(crate) fn between(before: &Counters, after: &Counters, n: u64) -> Budget {
        let per_task = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / n.max(1) as f64;
        let (p0, p1) = (before.parties, after.parties);
        let broker = before.broker.zip(after.broker).map(|(a, b)| per_task(a, b));
        let mut budget = Budget {
            machine: per_task(before.machine, after.machine),
            tasks: per_task(p0.tasks, p1.tasks),
            pipeline: per_task(p0.pipeline, p1.pipeline),
            submitter: per_task(p0.submitter, p1.submitter),
            broker,
            redis: per_task(before.redis, after.redis),
            rest: 0.0,
        };
        budget.rest = budget.machine
            - budget.tasks
            - budget.pipeline
            - budget.submitter
            - budget.broker.unwrap_or(0.0)
            - budget.redis;
        budget
    }
}

/// The bench's own process and the children it reaped (the bare pipeline's tasks, the
/// submitter), in seconds.
pub(crate) fn own_and_reaped() -> Result<(f64, f64)> {
    let seconds = |who| -> Result<f64> {
        let usage = getrusage(who).context("getrusage")?;
        let (user, system) = (usage.user_time(), usage.system_time());
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        Ok(secs(user) + secs(system))
    };
    Ok((seconds(UsageWho::RUSAGE_SELF)?, seconds(UsageWho::RUSAGE_CHILDREN)?))
}

/// Busy clock ticks of every CPU since boot: the `cpu` line of `/proc/stat` but idle and iowait
/// (guest time is counted in user time already).
fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat: no cpu line")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal
    Ok([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum())
}

/// The processes of a RabbitMQ node running on this machine (`beam.smp`).
fn broker_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp"))
        .collect()
}
