//! `drover-bench`: measures drover on the local services in one run, against a bare pipeline
//! (lapin and redis alone) doing the same work, and prints a table and one JSON line.
//!
//! Phases (`--only` picks some): `submit` (submission rate, the submitter's peak RSS, Redis
//! bytes per queued task), `bare` (the yardstick: run again right after `e2e` when both run,
//! and the ratio taken to the mean of both), `e2e` (drover end to end, Redis bytes per
//! completed task; for it and the bare pipeline, the machine's CPU per task split into the
//! tasks', the pipeline's, the submitter's, the broker's, Redis's and the rest: `budget`),
//! `dispatch` (latency on an idle pool, each task added by the CLI, then by one long-lived
//! client, and the same path with lapin and redis alone), `staging` (S3 transfers through drover
//! and through the SDK alone) and `scrape` (a `/metrics` scrape).
//! Everything it makes lives under an account of its own, removed at the end, also on error
//! and on Ctrl-C.

mod bare;
mod budget;
mod farm;
mod phases;
mod report;
mod scrape;
mod staging;

use anyhow::{bail, Result};
use clap::Parser;
use std::process::ExitCode;

/// The phases, in the order they run. `submit` runs first: the submitter's peak RSS is read
/// with getrusage(RUSAGE_CHILDREN), the largest of all children waited for so far.
const PHASES: [&str; 6] = ["submit", "bare", "e2e", "dispatch", "staging", "scrape"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "drover-bench",
    about = "Measures drover on the local services (connection settings from DROVER_* and AWS_* as for drover; \
             the account is always a fresh one of its own, bench-<pid>)"
)]
pub(crate) struct Args {
    /// Tasks of /bin/true end to end (and through the bare pipeline).
    #[arg(long = "tasks", default_value_t = 20_000)]
    pub(crate) tasks: u64,
    /// drover-worker processes (the bare pipeline runs workers x slots children at once).
    #[arg(long = "workers", default_value_t = 2)]
    pub(crate) workers: u32,
    /// Task slots per worker (the pool's taskSlotsPerNode).
    #[arg(long = "slots", default_value_t = 8)]
    pub(crate) slots: u32,
    /// Tasks of the submission measurement (to a job with no worker).
    #[arg(long = "submit-tasks", default_value_t = 100_000)]
    pub(crate) submit_tasks: u64,
    /// Single tasks of the dispatch-latency measurement.
    #[arg(long = "dispatch-samples", default_value_t = 100)]
    pub(crate) dispatch_samples: u64,
    /// Tasks added (queued, on a pool with no worker) before the /metrics scrape.
    #[arg(long = "scrape-tasks", default_value_t = 0)]
    pub(crate) scrape_tasks: u64,
    /// Run only these phases (comma-separated): submit, bare, e2e, dispatch, staging, scrape.
    #[arg(long = "only", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(PHASES))]
    pub(crate) only: Vec<String>,
    /// Where drover, drover-worker and drover-monitor are (default: $DROVER_BIN_DIR, else
    /// beside this program).
    #[arg(long = "bin-dir", env = "DROVER_BIN_DIR")]
    pub(crate) bin_dir: Option<std::path::PathBuf>,
    /// Run every task as the workers' own user (drover-worker --tasks-as-worker-user), as a
    /// worker that is not root must; as root, this measures what tasks' own users cost.
    #[arg(long = "tasks-as-worker-user", env = "DROVER_TASKS_AS_WORKER_USER")]
    pub(crate) tasks_as_worker_user: bool,
}

impl Args {
    /// The phases to run, in their order.
    pub(crate) fn phases(&self) -> Vec<&'static str> {
        PHASES.into_iter().filter(|p| self.only.is_empty() || self.only.iter().any(|o| o == p)).collect()
    }

    /// Whether the workers run tasks as users of their own (Azure's default): as root, unless
    /// told otherwise.
    pub(crate) fn task_users(&self) -> bool {
        !self.tasks_as_worker_user && nix::unistd::geteuid().is_root()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: Args) -> Result<()> {
    if args.tasks == 0 || args.workers == 0 || args.slots == 0 {
        bail!("--tasks, --workers and --slots must be at least 1");
    }
    let phases = args.phases();
    let mut farm = farm::Farm::new(&args).await?;
    eprintln!(
        "drover-bench: account {}, work directory {}, phases {}",
        farm.account,
        farm.work.display(),
        phases.join(",")
    );
    let outcome = tokio::select! {
        outcome = run(&mut farm, &args, &phases) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    farm.cleanup(outcome.is_err()).await;
    let report = outcome?;
    report.print(&args);
    Ok(())
}

/// Runs the chosen phases in order, filling the report.
async fn run(farm: &mut farm::Farm, args: &Args, chosen: &[&str]) -> Result<report::Report> {
    let mut report = report::Report::default();
    if chosen.contains(&"submit") {
        eprintln!("[submit] {} tasks to a job with no worker", args.submit_tasks);
        report.submit = Some(phases::submit(farm, args.submit_tasks).await?);
    }
    if chosen.contains(&"bare") {
        eprintln!("[bare] {} messages, {} children at once", args.tasks, args.workers * args.slots);
        report.bare = Some(bare::run(farm, args.tasks, args.workers * args.slots).await?);
    }
    if chosen.contains(&"e2e") {
        eprintln!("[e2e] {} tasks on {} workers x {} slots", args.tasks, args.workers, args.slots);
        report.e2e = Some(phases::end_to_end(farm, args).await?);
        if chosen.contains(&"bare") {
            eprintln!("[bare] again, after e2e");
            report.bare_after = Some(bare::run(farm, args.tasks, args.workers * args.slots).await?);
        }
    }
    if chosen.contains(&"dispatch") {
        eprintln!("[dispatch] {} single tasks on an idle pool", args.dispatch_samples);
        report.dispatch = Some(phases::dispatch(farm, args).await?);
    }
    // The workers' part is over: the rest runs without them.
    farm.stop_processes().await;
    if chosen.contains(&"staging") {
        eprintln!("[staging] 200 x 1 KiB and 20 x 1 MiB, through drover and through aws-sdk-s3");
        report.staging = Some(staging::run(farm).await?);
    }
    if chosen.contains(&"scrape") {
        eprintln!("[scrape] 20 GETs of /metrics ({} tasks added first)", args.scrape_tasks);
        report.scrape = Some(scrape::run(farm, args.scrape_tasks).await?);
    }
    Ok(report)
}
