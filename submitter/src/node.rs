//! `drover node ...`: a pool's compute nodes (its workers) and what they run.

use crate::ids::PoolId;
use crate::output::{self, Format};
use drover_core::model::node::{NodeOrder, TasksOption};
use drover_core::status::StatusStore;
use drover_core::Config;

#[derive(clap::Subcommand)]
pub(crate) enum NodeCommand {
    /// List a pool's nodes with their state and running tasks.
    List(PoolId),
    /// Show one node.
    Show {
        #[command(flatten)]
        pool: PoolId,
        /// The node's id (drover-worker --node-id; by default the host name and a suffix).
        #[arg(long, value_name = "NODE")]
        node_id: String,
    },
    /// Stop a node taking tasks (Azure's disable scheduling); it shows `offline` once idle.
    DisableScheduling {
        #[command(flatten)]
        pool: PoolId,
        /// The node's id.
        #[arg(long, value_name = "NODE")]
        node_id: String,
        /// What happens to its running tasks: requeue, terminate or taskcompletion (let them finish).
        #[arg(long, value_name = "WHAT", default_value = "requeue", value_parser = ["requeue", "terminate", "taskcompletion"])]
        option: String,
    },
    /// Restart a node's worker (Azure's reboot): it leaves, handing back, killing or finishing
    /// its tasks, and the actuator that runs it (drover-monitor, systemd) starts it again.
    Reboot {
        #[command(flatten)]
        pool: PoolId,
        /// The node's id.
        #[arg(long, value_name = "NODE")]
        node_id: String,
        /// What happens to its running tasks: requeue, terminate or taskcompletion.
        #[arg(long, value_name = "WHAT", default_value = "requeue", value_parser = ["requeue", "terminate", "taskcompletion", "retaineddata"])]
        option: String,
    },
    /// Remove nodes from their pool (Azure's remove nodes): each leaves, and the pool asks for
    /// that many nodes fewer.
    Remove {
        #[command(flatten)]
        pool: PoolId,
        /// The nodes' ids (repeat the flag).
        #[arg(long = "node-id", value_name = "NODE", required = true)]
        node_ids: Vec<String>,
        /// What happens to their running tasks: requeue, terminate or taskcompletion.
        #[arg(long, value_name = "WHAT", default_value = "requeue", value_parser = ["requeue", "terminate", "taskcompletion", "retaineddata"])]
        option: String,
    },
    /// Let a node take tasks again.
    EnableScheduling {
        #[command(flatten)]
        pool: PoolId,
        /// The node's id.
        #[arg(long, value_name = "NODE")]
        node_id: String,
    },
    /// A node's files: its part of the work directory (jobs/<job>/<task>/..., startup/...),
    /// served by the node itself wherever it runs.
    #[command(subcommand)]
    File(NodeFileCommand),
}

/// One file of a node.
#[derive(clap::Args)]
pub(crate) struct NodeFile {
    #[command(flatten)]
    pool: PoolId,
    /// The node's id.
    #[arg(long, value_name = "NODE")]
    node_id: String,
    /// The file's path on the node, as listed.
    #[arg(long, value_name = "FILE")]
    file_path: String,
}

#[derive(clap::Subcommand)]
pub(crate) enum NodeFileCommand {
    /// List a node's files.
    List {
        #[command(flatten)]
        pool: PoolId,
        /// The node's id.
        #[arg(long, value_name = "NODE")]
        node_id: String,
        /// Every level, not only the top.
        #[arg(long)]
        recursive: bool,
    },
    /// Download one of a node's files.
    Download {
        #[command(flatten)]
        file: NodeFile,
        /// The local file to write (created or replaced).
        #[arg(long, value_name = "PATH")]
        destination: std::path::PathBuf,
    },
    /// Delete one of a node's files.
    Delete {
        #[command(flatten)]
        file: NodeFile,
        /// Delete a directory with everything in it.
        #[arg(long)]
        recursive: bool,
    },
}

pub(crate) async fn run(config: &Config, format: Format, cmd: NodeCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        NodeCommand::List(PoolId { pool_id }) => {
            store.get_pool(&pool_id).await?;
            let columns = ["id", "state", "runningTasksCount", "runningTaskSlotsCount", "totalTasksRun", "hostName"];
            output::list(format, &store.list_nodes(&pool_id).await?, &columns)
        }
        NodeCommand::Show { pool: PoolId { pool_id }, node_id } => {
            output::one(format, &store.get_node(&pool_id, &node_id).await?)
        }
        NodeCommand::DisableScheduling { pool: PoolId { pool_id }, node_id, option } => {
            store.set_node_scheduling(&pool_id, &node_id, Some(tasks_option(&option)?)).await?;
            output::one(format, &store.get_node(&pool_id, &node_id).await?)
        }
        NodeCommand::Reboot { pool: PoolId { pool_id }, node_id, option } => {
            store.order_node(&pool_id, &node_id, NodeOrder::Reboot(tasks_option(&option)?)).await?;
            output::one(format, &store.get_node(&pool_id, &node_id).await?)
        }
        NodeCommand::Remove { pool: PoolId { pool_id }, node_ids, option } => {
            drover_core::actions::remove_nodes(&store, &pool_id, &node_ids, tasks_option(&option)?).await?;
            let columns = ["id", "state", "runningTasksCount", "runningTaskSlotsCount", "totalTasksRun", "hostName"];
            output::list(format, &store.list_nodes(&pool_id).await?, &columns)
        }
        NodeCommand::EnableScheduling { pool: PoolId { pool_id }, node_id } => {
            store.set_node_scheduling(&pool_id, &node_id, None).await?;
            output::one(format, &store.get_node(&pool_id, &node_id).await?)
        }
        NodeCommand::File(NodeFileCommand::List { pool: PoolId { pool_id }, node_id, recursive }) => {
            let files = drover_core::actions::node_files(&store, &pool_id, &node_id).await?;
            let shown: Vec<_> = files.list("", recursive).await?.iter().map(|f| f.to_azure(None)).collect();
            output::list(format, &shown, &crate::task::FILE_COLUMNS)
        }
        NodeCommand::File(NodeFileCommand::Download {
            file: NodeFile { pool: PoolId { pool_id }, node_id, file_path },
            destination,
        }) => {
            let files = drover_core::actions::node_files(&store, &pool_id, &node_id).await?;
            let read =
                files.read(&file_path, None).await.map_err(|e| anyhow::anyhow!("--file-path {file_path:?}: {e}"))?;
            crate::task::save(read, &destination).await
        }
        NodeCommand::File(NodeFileCommand::Delete {
            file: NodeFile { pool: PoolId { pool_id }, node_id, file_path },
            recursive,
        }) => {
            let files = drover_core::actions::node_files(&store, &pool_id, &node_id).await?;
            files.remove(&file_path, recursive).await.map_err(|e| anyhow::anyhow!("--file-path {file_path:?}: {e}"))?;
            output::one(format, &serde_json::json!({"poolId": pool_id, "nodeId": node_id, "deleted": file_path}))
        }
    }
}

/// The `--option` of a node command.
fn tasks_option(given: &str) -> anyhow::Result<TasksOption> {
    TasksOption::parse(given)
        .ok_or_else(|| anyhow::anyhow!("--option {given:?}: use requeue, terminate, taskcompletion or retaineddata"))
}
