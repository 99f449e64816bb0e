//! The phases that go through drover itself: submission (no worker), end to end on the farm
//! pool's workers, and dispatch latency on the idle farm.

use crate::budget::{self, Budget, Parties};
use crate::farm::{self, Farm, FARM_POOL, QUEUE_POOL};
use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What the submission phase measured.
pub(crate) struct Submit {
    pub(crate) tasks: u64,
    pub(crate) seconds: f64,
    pub(crate) peak_rss_kib: u64,
    /// How the peak was read: `getrusage` (exact) or `vmhwm` (sampled every 10 ms).
    pub(crate) rss_method: &'static str,
    pub(crate) redis_bytes_per_queued_task: f64,
}

/// What the end-to-end phase measured.
pub(crate) struct EndToEnd {
    pub(crate) tasks: u64,
    pub(crate) seconds: f64,
    /// When `drover task create` had exited (from the same start).
    pub(crate) submit_seconds: f64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    /// The task spawners' CPU per task, part of the workers' (`cpu.pipeline`).
    pub(crate) spawner_cpu_us_per_task: f64,
    /// The machine's CPU per task, by party: `pipeline` is the workers' with their task
    /// spawners' (not the tasks'), `redis` the Redis server's (the submission's included).
    pub(crate) cpu: Budget,
    pub(crate) redis_bytes_per_completed_task: f64,
    pub(crate) record_key: String,
    pub(crate) record_bytes: Option<i64>,
}

/// What the dispatch phase measured: creation to start of each task, in ms.
pub(crate) struct Dispatch {
    /// Each task added by `drover task create` (a new process and connections per task).
    pub(crate) latencies_ms: Vec<i64>,
    /// Each task added by one long-lived client (as drover-api adds them), sorted.
    pub(crate) client_ms: Vec<i64>,
    /// The same path with lapin and redis alone ([`crate::bare::dispatch`]), sorted, in µs.
    pub(crate) bare_us: Vec<u64>,
}

/// The value at quantile `q` (nearest rank) of sorted values.
pub(crate) fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Submits `m` tasks with `drover task create --json-file` to a job of a pool with no worker:
/// the rate, the submitter's peak RSS, and Redis bytes per queued task (`used_memory` delta).
pub(crate) async fn submit(farm: &mut Farm, m: u64) -> Result<Submit> {
    let file = farm.task_file("submit.jsonl", m)?;
    farm.pool_and_job(QUEUE_POOL, 1, "submit").await?;
    let errors = farm.work.join("submit.err");
    let stderr = std::fs::File::create(&errors).with_context(|| format!("create {}", errors.display()))?;
    // The submitter's peak RSS: getrusage(RUSAGE_CHILDREN).ru_maxrss is the largest peak of the
    // children waited for so far, so when it grows across the submitter's run it is the
    // submitter's own (this phase runs first: only the small `pool create` and `job create`
    // went before). If it does not grow, an earlier child was as large, and the figure is the
    // submitter's VmHWM (/proc/<pid>/status, itself a high-water mark) sampled every 10 ms while
    // it runs (which misses at most what it grew in its last 10 ms).
    let rusage_before = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?.max_rss();
    let mem0 = farm.used_memory().await?;
    let start = Instant::now();
    let mut child = start_submitter(farm, "submit", &file, stderr)?;
    let pid = child.id().context("drover task create has no pid")?;
    let mut sampled = 0;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("wait for drover task create")?,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                sampled = sampled.max(farm::peak_rss_kib(pid).unwrap_or(0));
            }
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let rusage_after = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?.max_rss();
    if !status.success() {
        bail!("drover task create failed ({status}): {}", farm::tail(&errors, 20));
    }
    let mem1 = farm.used_memory().await?;
    let (peak_rss_kib, rss_method) = if rusage_after > rusage_before {
        (u64::try_from(rusage_after).unwrap_or(0), "getrusage")
    } else {
        (sampled, "vmhwm")
    };
    // The queue holds m messages: gone before the next phases.
    farm.drover(&["job", "delete", "--job-id", "submit"]).await?;
    farm.drover(&["pool", "delete", "--pool-id", QUEUE_POOL]).await?;
    Ok(Submit {
        tasks: m,
        seconds,
        peak_rss_kib,
        rss_method,
        redis_bytes_per_queued_task: (mem1 - mem0) as f64 / m as f64,
    })
}

/// Creates the farm pool and starts its workers, unless they run.
async fn ensure_farm(farm: &mut Farm, args: &crate::Args) -> Result<()> {
    if farm.workers.is_empty() {
        let slots = args.slots.to_string();
        farm.drover(&["pool", "create", "--pool-id", FARM_POOL, "--task-slots-per-node", &slots]).await?;
        farm.start_workers(args.workers, args.tasks_as_worker_user).await?;
    }
    Ok(())
}

/// Fails if a worker has exited.
fn check_workers(farm: &mut Farm) -> Result<()> {
    for w in &mut farm.workers {
        if let Some(status) = w.child.try_wait().with_context(|| format!("check {}", w.name))? {
            bail!("{} exited ({status}):\n{}", w.name, farm::tail(&w.log, 20));
        }
    }
    Ok(())
}

/// The CPU of the workers, of their task spawners, and of the tasks they reaped, in clock ticks.
#[derive(Clone, Copy)]
struct WorkersCpu {
    workers: u64,
    spawners: u64,
    tasks: u64,
}

/// The farm's workers' and task spawners' CPU so far.
fn workers_cpu(farm: &Farm) -> Result<WorkersCpu> {
    let mut cpu = WorkersCpu { workers: 0, spawners: 0, tasks: 0 };
    for w in &farm.workers {
        let worker = farm::cpu_ticks(w.pid)?;
        (cpu.workers, cpu.tasks) = (cpu.workers + worker.own, cpu.tasks + worker.reaped);
        for helper in farm::task_spawners(w.pid) {
            // A spawner that exited meanwhile took its CPU with it.
            if let Ok(spawner) = farm::cpu_ticks(helper) {
                (cpu.spawners, cpu.tasks) = (cpu.spawners + spawner.own, cpu.tasks + spawner.reaped);
            }
        }
    }
    Ok(cpu)
}

/// The e2e phase's parties: the tasks, the workers with their spawners, the submitter (the one
/// child the bench reaps meanwhile), in seconds.
fn e2e_parties(cpu: WorkersCpu, ticks: u64) -> Result<Parties> {
    let s = |t: u64| t as f64 / ticks as f64;
    Ok(Parties { tasks: s(cpu.tasks), pipeline: s(cpu.workers + cpu.spawners), submitter: budget::own_and_reaped()?.1 })
}

/// N tasks of /bin/true through `drover task create` on the farm's idle workers: from the start
/// of the submission to the job's completed count reaching N (polled every 20 ms).
pub(crate) async fn end_to_end(farm: &mut Farm, args: &crate::Args) -> Result<EndToEnd> {
    let n = args.tasks;
    ensure_farm(farm, args).await?;
    farm.drover(&["job", "create", "--job-id", "e2e", "--pool-id", FARM_POOL]).await?;
    let file = farm.task_file("e2e.jsonl", n)?;
    let errors = farm.work.join("e2e.err");
    let stderr = std::fs::File::create(&errors).with_context(|| format!("create {}", errors.display()))?;
    let ticks = farm::ticks_per_second()?;
    let cpu0 = workers_cpu(farm)?;
    let counters0 = budget::sample(farm, e2e_parties(cpu0, ticks)?).await?;
    let mem0 = farm.used_memory().await?;
    let start = Instant::now();
    let mut child = start_submitter(farm, "e2e", &file, stderr)?;
    let mut submit_seconds = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last, mut last_change) = (0, Instant::now());
    let counts = loop {
        tokio::select! {
            status = child.wait(), if submit_seconds.is_none() => {
                let status = status.context("wait for drover task create")?;
                if !status.success() {
                    bail!("drover task create failed ({status}): {}", farm::tail(&errors, 20));
                }
                submit_seconds = Some(start.elapsed().as_secs_f64());
            }
            _ = tick.tick() => {
                let counts = farm.store.task_counts("e2e").await.context("read the job's task counts")?.task_counts;
                if counts.completed >= n {
                    break counts;
                }
                if counts.completed != last {
                    (last, last_change) = (counts.completed, Instant::now());
                } else if last_change.elapsed() > Duration::from_secs(60) {
                    bail!("no task completed for 60 s ({} of {n} completed)", counts.completed);
                }
                check_workers(farm)?;
            }
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let per_task = |ticks_used: u64| ticks_used as f64 * 1e6 / ticks as f64 / n as f64;
    let cpu1 = workers_cpu(farm)?;
    let counters1 = budget::sample(farm, e2e_parties(cpu1, ticks)?).await?;
    let mem1 = farm.used_memory().await?;
    let submit_seconds = match submit_seconds {
        Some(s) => s,
        None => {
            let status = child.wait().await.context("wait for drover task create")?;
            if !status.success() {
                bail!("drover task create failed ({status}): {}", farm::tail(&errors, 20));
            }
            start.elapsed().as_secs_f64()
        }
    };
    let record_key = format!("drover:{{{}:e2e}}:t:{}", farm.account, farm::task_id(1));
    let record_bytes: Option<i64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&record_key)
        .query_async(&mut farm.redis)
        .await
        .context("Redis MEMORY USAGE")?;
    Ok(EndToEnd {
        tasks: n,
        seconds,
        submit_seconds,
        succeeded: counts.succeeded,
        failed: counts.failed,
        spawner_cpu_us_per_task: per_task(cpu1.spawners.saturating_sub(cpu0.spawners)),
        cpu: Budget::between(&counters0, &counters1, n),
        redis_bytes_per_completed_task: (mem1 - mem0) as f64 / n as f64,
        record_key,
        record_bytes,
    })
}

/// K single tasks, each added once the previous one completed, to the idle farm, first each by
/// `drover task create`, then K more by one long-lived client: each task's start time minus its
/// creation time (both recorded by drover, in ms).
pub(crate) async fn dispatch(farm: &mut Farm, args: &crate::Args) -> Result<Dispatch> {
    ensure_farm(farm, args).await?;
    farm.drover(&["job", "create", "--job-id", "dispatch", "--pool-id", FARM_POOL]).await?;
    let n = args.dispatch_samples;
    let mut latencies_ms = Vec::new();
    for i in 1..=n {
        let id = format!("d{i:07}");
        farm.drover(&["task", "create", "--job-id", "dispatch", "--task-id", &id, "--command-line", "/bin/true"])
            .await?;
        latencies_ms.push(started(farm, &id, i).await?);
    }
    latencies_ms.sort_unstable();
    let topology = drover_core::queue::Topology::new(&farm.account);
    let publisher = drover_core::queue::Publisher::connect(&farm.config.broker(), topology)
        .await
        .context("connect to the broker")?;
    let mut client_ms = Vec::new();
    for i in n + 1..=2 * n {
        let id = format!("d{i:07}");
        let task = serde_json::from_value(serde_json::json!({"id": id, "commandLine": "/bin/true"}))?;
        let progress = |_: usize| {};
        let mut submission = drover_core::submit::Submission {
            store: &farm.store,
            publisher: &publisher,
            job_id: "dispatch",
            continue_on_error: false,
            progress: &progress,
        };
        submission.add(&[task]).await.with_context(|| format!("add task {id}"))?;
        client_ms.push(started(farm, &id, i).await?);
    }
    publisher.close().await;
    client_ms.sort_unstable();
    let bare_us = crate::bare::dispatch(farm, n).await?;
    Ok(Dispatch { latencies_ms, client_ms, bare_us })
}

/// Task `id` of the dispatch job, the job's `i`th: waits until it completed, then its start time
/// minus its creation time.
async fn started(farm: &mut Farm, id: &str, i: u64) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = farm.store.task_counts("dispatch").await.context("read the job's task counts")?.task_counts;
        if counts.completed >= i {
            break;
        }
        if Instant::now() > deadline {
            bail!("task {id} did not complete within 30 s");
        }
        check_workers(farm)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let record = farm.store.task_record("dispatch", id).await.with_context(|| format!("read task {id}"))?;
    let start = record.start.with_context(|| format!("task {id} completed without a start time"))?;
    Ok(start - record.ctime)
}

/// Starts `drover task create` adding the tasks of `file` to `job`, its errors to `stderr`.
fn start_submitter(
    farm: &Farm,
    job: &str,
    file: &std::path::Path,
    stderr: std::fs::File,
) -> Result<tokio::process::Child> {
    farm.command("drover")
        .args(["-o", "json", "task", "create", "--job-id", job, "--json-file"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start drover task create")
}
