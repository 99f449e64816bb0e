//! `drover job wait`: poll the job's counters until it ends, say what holds it back, and list
//! what failed.

use super::{about_nodes, failure_line, summary};
use crate::output::{self, Format};
use crate::Failed;
use drover_core::status::{count, StatusStore};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the counters are read (one O(1) round trip each).
const POLL: Duration = Duration::from_millis(200);
/// How often the pool's nodes are looked at (a few round trips).
const NODE_CHECK: Duration = Duration::from_secs(5);
/// How many failed tasks a failed wait lists.
const FAILED_SHOWN: usize = 10;

/// Waits for `job_id` to end. Exit 0 iff every task succeeded.
pub(super) async fn wait(
    store: &StatusStore,
    format: Format,
    job_id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pool = store.get_job(job_id).await?.spec.pool_info.pool_id;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tasks {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    };
    let give_up = |bar: &Option<indicatif::ProgressBar>| {
        if let Some(bar) = bar {
            bar.abandon();
        }
    };
    // What was last said about the pool's nodes, so that it is said once, not every check.
    let mut nobody_consumes = false;
    let mut next_node_check = Instant::now();
    let counts = loop {
        let progress = store.job_progress(job_id).await?;
        let t = &progress.counts.task_counts;
        if let Some(bar) = &bar {
            bar.set_length(t.total());
            bar.set_position(t.completed);
            bar.set_message(format!("({} failed, {} running)", t.failed, t.running));
        }
        let job_ended = progress.state != drover_core::model::JobState::Active;
        if (t.active == 0 && t.running == 0) || job_ended {
            break progress.counts;
        }
        if progress.stuck() {
            give_up(&bar);
            let why = store.job_stall(job_id).await?.map(|s| s.message).unwrap_or_default();
            anyhow::bail!(
                "job {job_id:?} cannot finish: {why} (see drover job show --job-id {job_id}); {}",
                summary(&progress.counts)
            );
        }
        if Instant::now() >= next_node_check {
            next_node_check = Instant::now() + NODE_CHECK;
            let stall = store.job_stall(job_id).await?.filter(about_nodes);
            match &stall {
                Some(s) if !nobody_consumes => say(format!("drover: {}. Still waiting.", s.message)),
                None if nobody_consumes => say(format!("drover: pool {pool} has a live node now.")),
                _ => {}
            }
            nobody_consumes = stall.is_some();
        }
        if timeout.is_some_and(|limit| started.elapsed() >= limit) {
            give_up(&bar);
            let stall = store.job_stall(job_id).await?.filter(about_nodes);
            let nobody = match stall {
                Some(_) => format!("; nobody consumes pool {pool}: it has no live node"),
                None => String::new(),
            };
            anyhow::bail!(
                "job {job_id:?}: timed out after {}s: {}{nobody}",
                started.elapsed().as_secs(),
                summary(&progress.counts)
            );
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(bar) = &bar {
        bar.finish();
    }
    eprintln!("job {job_id}: {} in {:.1}s", summary(&counts), started.elapsed().as_secs_f64());
    let t = &counts.task_counts;
    if t.failed > 0 {
        let failed = store.failed_tasks(job_id, FAILED_SHOWN).await?;
        eprintln!("{} failed:", count(t.failed, "task", "tasks"));
        for task in &failed {
            eprintln!("{}", failure_line(task));
        }
        if t.failed > failed.len() as u64 {
            eprintln!("  ... and {} more", t.failed - failed.len() as u64);
        }
        eprintln!("all of them: drover task list --job-id {job_id} --state completed");
    }
    output::one(format, &counts)?;
    if t.failed > 0 || t.succeeded < t.total() {
        return Err(Failed.into());
    }
    Ok(())
}
