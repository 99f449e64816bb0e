//! `drover job ...`

use crate::output::{self, Format};
use crate::Failed;
use drover_core::model::job::TaskCountsResult;
use drover_core::model::JobAddParameter;
use drover_core::status::StatusStore;
use drover_core::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub(crate) enum JobCommand {
    /// Create a job on a pool.
    Create {
        #[arg(long, required_unless_present = "json_file", conflicts_with = "json_file")]
        job_id: Option<String>,
        #[arg(long, required_unless_present = "json_file", conflicts_with = "json_file")]
        pool_id: Option<String>,
        /// A JobAddParameter JSON file.
        #[arg(long)]
        json_file: Option<PathBuf>,
    },
    /// Show one job.
    Show {
        #[arg(long)]
        job_id: String,
    },
    /// List jobs.
    List,
    /// Tasks and slots by state (Azure's TaskCountsResult).
    TaskCounts {
        #[arg(long)]
        job_id: String,
    },
    /// Wait until every task of the job has completed; exit 0 iff all succeeded.
    Wait {
        #[arg(long)]
        job_id: String,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// End the job: none of its tasks starts again, and running ones are killed.
    Terminate {
        #[arg(long)]
        job_id: String,
        /// The reason recorded in executionInfo.terminateReason.
        #[arg(long, default_value = "UserTerminate")]
        terminate_reason: String,
    },
    /// Where the job preparation and release tasks ran, and how they ended (one entry per node).
    PrepReleaseStatus {
        #[arg(long)]
        job_id: String,
    },
    /// Delete the job and its task records.
    Delete {
        #[arg(long)]
        job_id: String,
    },
}

pub(crate) async fn run(config: &Config, format: Format, cmd: JobCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        JobCommand::Create { job_id, pool_id, json_file } => {
            let spec = match json_file {
                Some(path) => crate::read_json::<JobAddParameter>(&path)?,
                None => {
                    JobAddParameter::new(job_id.as_deref().unwrap_or_default(), pool_id.as_deref().unwrap_or_default())
                }
            };
            store.create_job(&spec).await?;
            output::one(format, &store.get_job(&spec.id).await?)
        }
        JobCommand::Show { job_id } => {
            let mut job = store.get_job(&job_id).await?;
            job.dependencies = store.dependency_report(&job_id, 100).await?;
            output::one(format, &job)
        }
        JobCommand::List => {
            let mut jobs = Vec::new();
            for id in store.job_ids().await? {
                if let Ok(job) = store.get_job(&id).await {
                    jobs.push(job);
                }
            }
            output::list(format, &jobs, &["id", "poolInfo.poolId", "state", "creationTime"])
        }
        JobCommand::TaskCounts { job_id } => output::one(format, &store.task_counts(&job_id).await?),
        JobCommand::Wait { job_id, timeout } => wait(&store, format, &job_id, timeout.map(Duration::from_secs)).await,
        JobCommand::Terminate { job_id, terminate_reason } => {
            store.terminate_job(&job_id, &terminate_reason).await?;
            output::one(format, &store.get_job(&job_id).await?)
        }
        JobCommand::PrepReleaseStatus { job_id } => {
            output::list(format, &store.prep_release_status(&job_id).await?, &["nodeId", "poolId"])
        }
        JobCommand::Delete { job_id } => Ok(store.delete_job(&job_id).await?),
    }
}

fn summary(c: &TaskCountsResult) -> String {
    let t = &c.task_counts;
    format!(
        "{} of {} tasks completed ({} succeeded, {} failed), {} running, {} active",
        t.completed,
        t.total(),
        t.succeeded,
        t.failed,
        t.running,
        t.active
    )
}

/// Polls the job's counters (O(1) each) until nothing is active or running.
async fn wait(store: &StatusStore, format: Format, job_id: &str, timeout: Option<Duration>) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tasks {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let counts = loop {
        let progress = store.job_progress(job_id).await?;
        let (state, counts) = (progress.state, progress.counts);
        let t = &counts.task_counts;
        if let Some(bar) = &bar {
            bar.set_length(t.total());
            bar.set_position(t.completed);
            bar.set_message(format!("({} failed, {} running)", t.failed, t.running));
        }
        let job_ended = state != drover_core::model::JobState::Active;
        if (t.active == 0 && t.running == 0) || job_ended {
            break counts;
        }
        if progress.stuck() {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            anyhow::bail!(
                "job {job_id:?} cannot finish: {} tasks are blocked by failed parents and {} wait on tasks that are not coming (see drover job show --job-id {job_id}); {}",
                progress.blocked,
                progress.waiting,
                summary(&counts)
            );
        }
        if timeout.is_some_and(|limit| started.elapsed() >= limit) {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            anyhow::bail!("job {job_id:?}: timed out after {}s: {}", started.elapsed().as_secs(), summary(&counts));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Some(bar) = &bar {
        bar.finish();
    }
    eprintln!("job {job_id}: {} in {:.1}s", summary(&counts), started.elapsed().as_secs_f64());
    output::one(format, &counts)?;
    let t = &counts.task_counts;
    if t.failed > 0 || t.succeeded < t.total() {
        return Err(Failed.into());
    }
    Ok(())
}
