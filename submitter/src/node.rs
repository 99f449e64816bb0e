//! `drover node ...`: a pool's compute nodes (its workers) and what they run.

use crate::ids::PoolId;
use crate::output::{self, Format};
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
    }
}
