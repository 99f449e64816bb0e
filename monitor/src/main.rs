//! `drover-monitor`: the autoscaler (and, with the monitor issue, the Prometheus exporter).

mod actuator;
mod autoscaler;

use actuator::{Actuator, Processes, Systemd};
use clap::Parser;
use drover_core::status::StatusStore;
use drover_core::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ActuatorKind {
    /// Start and stop local drover-worker processes (one machine).
    Process,
    /// Start and stop instances of drover-worker@<pool>-<n>.service.
    Systemd,
}

#[derive(Parser)]
#[command(name = "drover-monitor", version, about = "drover's autoscaler and Prometheus exporter")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Scale the pools that set enableAutoScale (or targetDedicatedNodes).
    #[arg(long)]
    autoscale: bool,
    /// How workers are started and stopped.
    #[arg(long, value_enum, default_value = "process")]
    actuator: ActuatorKind,
    /// The drover-worker binary for the process actuator (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// The work directory of the process actuator's workers (and their logs).
    #[arg(long, default_value = "/var/lib/drover")]
    work_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    drover_core::telemetry::init("info");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-monitor: {}", e.to_string().lines().next().unwrap_or(""));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.config.validate()?;
    if !cli.autoscale {
        anyhow::bail!("nothing to do: give --autoscale (the Prometheus exporter arrives with the monitor issue)");
    }
    let store = StatusStore::connect(&cli.config).await?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let actuator = match cli.actuator {
        ActuatorKind::Process => {
            let bin = match cli.worker_bin {
                Some(bin) => bin,
                None => std::env::current_exe()?.with_file_name("drover-worker"),
            };
            let work_dir = std::path::absolute(&cli.work_dir)
                .map_err(|e| anyhow::anyhow!("--work-dir {}: {e}", cli.work_dir.display()))?;
            Actuator::Process(Box::new(Processes::new(bin, work_dir, cli.config.clone(), host)))
        }
        ActuatorKind::Systemd => Actuator::Systemd(Systemd { host }),
    };
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    tracing::info!(actuator = ?cli.actuator, "autoscaler started");
    autoscaler::run(store, actuator, shutdown).await;
    Ok(())
}
