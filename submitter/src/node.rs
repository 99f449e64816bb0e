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
    }
}

/// The `--option` of a node command.
fn tasks_option(given: &str) -> anyhow::Result<TasksOption> {
    TasksOption::parse(given)
        .ok_or_else(|| anyhow::anyhow!("--option {given:?}: use requeue, terminate, taskcompletion or retaineddata"))
}
