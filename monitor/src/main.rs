//! `drover-monitor`: the Prometheus exporter (`/metrics`), the job scheduler and the autoscaler.

mod actuator;
mod autoscaler;
mod http;
mod metrics;
mod scheduler;

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
#[command(name = "drover-monitor", version, about = "drover's autoscaler, job scheduler and Prometheus exporter")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Where to serve /metrics (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: std::net::SocketAddr,
    /// The RabbitMQ management API, for unacked counts (without it, queues are read over AMQP).
    #[arg(
        long,
        env = "DROVER_RABBITMQ_API",
        default_value = "http://guest:guest@127.0.0.1:15672/",
        hide_env_values = true
    )]
    rabbitmq_api: String,
    /// Also scale the pools that set enableAutoScale (or targetDedicatedNodes).
    #[arg(long)]
    autoscale: bool,
    /// How workers are started and stopped.
    #[arg(long, value_enum, default_value = "process")]
    actuator: ActuatorKind,
    /// The drover-worker binary for the process actuator (default: beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// The most workers the autoscaler runs for one pool, whatever the pool asks for.
    #[arg(long, env = "DROVER_MAX_POOL_NODES", default_value_t = 32)]
    max_pool_nodes: u32,
    /// The most workers the autoscaler runs for all pools together (pools take from it in the
    /// order they are listed).
    #[arg(long, env = "DROVER_MAX_NODES", default_value_t = 64)]
    max_nodes: u32,
    /// A file holding `user:password` (mode 600): /metrics then asks for HTTP basic
    /// authentication with them (Prometheus: `basic_auth` with `password_file`).
    #[arg(long, env = "DROVER_METRICS_AUTH_FILE", value_name = "PATH")]
    metrics_auth_file: Option<PathBuf>,
    /// Serve /metrics over https with this PEM certificate chain (and --metrics-tls-key).
    #[arg(long, env = "DROVER_METRICS_TLS_CERT", value_name = "PATH", requires = "metrics_tls_key")]
    metrics_tls_cert: Option<PathBuf>,
    /// The PEM private key of --metrics-tls-cert (mode 600).
    #[arg(long, env = "DROVER_METRICS_TLS_KEY", value_name = "PATH", requires = "metrics_tls_cert")]
    metrics_tls_key: Option<PathBuf>,
    /// The work directory of the process actuator's workers (and their logs).
    #[arg(long, default_value = "/var/lib/drover")]
    work_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    drover_core::telemetry::init("info");
    let cli = Cli::parse();
    drover_core::telemetry::exit("drover-monitor", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.config.validate()?;
    let store = StatusStore::connect(&cli.config).await?;
    let api = Some(cli.rabbitmq_api.clone()).filter(|a| !a.is_empty());
    let exporter = std::sync::Arc::new(metrics::Exporter::new(store.clone(), cli.config.clone(), api)?);
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
    let auth = match &cli.metrics_auth_file {
        Some(path) => Some(http::basic_auth(path)?),
        None => None,
    };
    let tls = match (&cli.metrics_tls_cert, &cli.metrics_tls_key) {
        (Some(cert), Some(key)) => {
            Some(drover_core::tls::acceptor(cert, key, ("--metrics-tls-cert", "--metrics-tls-key"))?)
        }
        _ => None,
    };
    let server = tokio::spawn(http::serve(cli.listen, exporter, auth, tls, shutdown.clone()));
    tokio::spawn(scheduler::run(cli.config.clone(), store.clone(), shutdown.clone()));
    if cli.autoscale {
        let limits = autoscaler::Limits { pool: cli.max_pool_nodes, total: cli.max_nodes };
        tracing::info!(actuator = ?cli.actuator, max_pool_nodes = limits.pool, max_nodes = limits.total, "autoscaler started");
        autoscaler::run(store, actuator, limits, cli.config.broker(), cli.config.account.clone(), shutdown.clone())
            .await;
    }
    match server.await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("the metrics server stopped: {e}")),
    }
}
