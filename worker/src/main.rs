//! `drover-worker`: a node of a pool. Parses arguments and signals; the node agent is
//! `drover_core::node`.

use clap::Parser;
use drover_core::node::{self, NodeOptions};
use drover_core::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// mimalloc: glibc's malloc and free took about a tenth of a worker's CPU per task. Its task
/// spawners (this executable too) run it without transparent huge pages (`node::spawner`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "drover-worker", version, about = "A drover node: consumes its pool's queue and runs tasks")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// The pool to join.
    #[arg(long, required_unless_present = "instance")]
    pool_id: Option<String>,
    /// A systemd instance name `<pool>-<n>` (drover-worker@<pool>-<n>.service): the pool is
    /// the part before the last '-', the node id `<host>-<pool>-<n>`.
    #[arg(long, conflicts_with_all = ["pool_id", "node_id"])]
    instance: Option<String>,
    /// Leave the pool (drain) when the process that started this one exits (the monitor's
    /// process actuator sets this).
    #[arg(long)]
    exit_with_parent: bool,
    /// This node's id (default: host name plus a suffix unique on the host).
    #[arg(long)]
    node_id: Option<String>,
    /// Task slots (default: the pool's taskSlotsPerNode).
    #[arg(long)]
    task_slots: Option<u32>,
    /// Where task directories live.
    #[arg(long, default_value = "/var/lib/drover")]
    work_dir: PathBuf,
    /// Seconds running tasks get to finish after SIGTERM before they are handed back (SIGINT
    /// hands them back at once).
    #[arg(long, default_value_t = 300)]
    drain_timeout: u64,
    /// Seconds a file transfer keeps retrying while storage is unavailable before the task fails.
    #[arg(long, default_value_t = 60)]
    storage_retry_seconds: u64,
    /// The most bytes of resource files one task may download; past it the task fails with
    /// ResourceFileDownloadError (default: no limit).
    #[arg(long, env = "DROVER_MAX_TASK_DOWNLOAD_BYTES")]
    max_task_download_bytes: Option<u64>,
    /// Run every task as this worker's own user, non-admin ones included (for a worker that is
    /// not root, e.g. on a development machine). Without it, a worker that cannot switch users
    /// refuses to start.
    #[arg(long, env = "DROVER_TASKS_AS_WORKER_USER")]
    tasks_as_worker_user: bool,
    /// The only S3 places (s3://bucket[/prefix]; repeat, or separate with commas) a task may
    /// fetch resource files from or upload outputs to, besides its account's own prefix of the
    /// account's bucket (default: anywhere this worker's S3 credentials reach).
    #[arg(long, env = "DROVER_STORAGE_ALLOW", value_delimiter = ',', value_name = "S3_URL")]
    storage_allow: Vec<String>,
    /// The Batch API serving the account (drover-api's address, e.g. https://batch.example:8180),
    /// given to tasks as AZ_BATCH_ACCOUNT_URL; with signing keys, a task whose
    /// authenticationTokenSettings ask for `job` also gets AZ_BATCH_AUTHENTICATION_TOKEN.
    #[arg(long, env = "DROVER_API_URL", value_name = "URL")]
    api_url: Option<String>,
    /// Where the node serves its task and node files to drover-api and the drover CLI on other
    /// hosts (requests signed with a key it publishes in Redis), or `off`. Port 0 picks one.
    #[arg(long, env = "DROVER_FILES_LISTEN", value_name = "ADDR|off", default_value = "0.0.0.0:0")]
    files_listen: String,
    /// The URL others reach that service at (default: http://<the address this host reaches
    /// Redis from>:<port>; set it when a proxy or NAT stands between).
    #[arg(long, env = "DROVER_FILES_URL", value_name = "URL")]
    files_url: Option<String>,
}

fn main() -> ExitCode {
    // Started by a worker as its task spawner (see drover_core::node::serve_spawner).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == node::SPAWNER_FLAG) {
        return node::serve_spawner(args);
    }
    // The node's agent runs on one thread: the cores are the tasks', and an agent on several
    // threads spends its CPU handing work between them (a sixth of its CPU per task, with two).
    // Tasks' files move on a runtime of their own, one thread per core (TOKIO_WORKER_THREADS).
    let agent = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let transfers = tokio::runtime::Builder::new_multi_thread().thread_name("drover-transfer").enable_all().build();
    match (agent, transfers) {
        (Ok(agent), Ok(transfers)) => {
            let code = agent.block_on(worker(transfers.handle().clone()));
            transfers.shutdown_background();
            code
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("drover-worker: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn worker(transfers: tokio::runtime::Handle) -> ExitCode {
    drover_core::telemetry::init("info");
    let cli = Cli::parse();
    let work_dir = match std::path::absolute(&cli.work_dir) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("drover-worker: --work-dir {}: {e}", cli.work_dir.display());
            return ExitCode::from(2);
        }
    };
    let (pool_id, node_id) = match (&cli.instance, cli.pool_id) {
        (Some(instance), _) => match instance.rsplit_once('-') {
            Some((pool, n)) if !pool.is_empty() && n.parse::<u32>().is_ok() => {
                (pool.to_string(), format!("{}-{instance}", node::host_name()))
            }
            _ => {
                eprintln!("drover-worker: --instance {instance:?}: must be <pool>-<number>");
                return ExitCode::from(2);
            }
        },
        (None, pool) => (pool.unwrap_or_default(), cli.node_id.unwrap_or_else(node::default_node_id)),
    };
    let files_listen = match cli.files_listen.as_str() {
        "off" => None,
        addr => match addr.parse() {
            Ok(addr) => Some(addr),
            Err(e) => {
                eprintln!("drover-worker: --files-listen {addr:?}: {e} (expected IP:PORT or off)");
                return ExitCode::from(2);
            }
        },
    };
    let options = NodeOptions {
        pool_id,
        node_id,
        task_slots: cli.task_slots,
        work_dir,
        drain_timeout: Duration::from_secs(cli.drain_timeout),
        storage_retry: Duration::from_secs(cli.storage_retry_seconds),
        max_task_download_bytes: cli.max_task_download_bytes,
        tasks_as_worker_user: cli.tasks_as_worker_user,
        storage_allow: cli.storage_allow,
        api_url: cli.api_url,
        restartable: cli.instance.is_some() || cli.exit_with_parent,
        files_listen,
        files_url: cli.files_url,
        task_spawner: std::env::current_exe().ok(),
        transfers,
    };
    let shutdown = CancellationToken::new();
    let hand_back = CancellationToken::new();
    let (leave, now) = (shutdown.clone(), hand_back.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: leaving the pool once running tasks finish (drain)");
                    leave.cancel();
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: leaving the pool now, handing running tasks back");
                    now.cancel();
                    leave.cancel();
                }
            }
        }
    });
    if cli.exit_with_parent {
        let (leave, parent) = (shutdown.clone(), std::os::unix::process::parent_id());
        tokio::spawn(async move {
            while std::os::unix::process::parent_id() == parent {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tracing::warn!("the process that started this worker exited; leaving the pool");
            leave.cancel();
        });
    }
    match node::run(cli.config, options, shutdown, hand_back).await {
        // A reboot exits with EX_TEMPFAIL: systemd (Restart=on-failure) and the monitor's
        // process actuator start the worker again.
        Ok(node::Left::Rebooting) => ExitCode::from(75),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-worker: {e}");
            ExitCode::from(1)
        }
    }
}
