//! `drover node ...`: a pool's compute nodes (its workers) and what they run.

use crate::output::{self, Format};
use drover_core::status::StatusStore;
use drover_core::Config;

#[derive(clap::Subcommand)]
pub(crate) enum NodeCommand {
    /// List a pool's nodes with their state and running tasks.
    List {
        #[arg(long)]
        pool_id: String,
    },
    /// Show one node.
    Show {
        #[arg(long)]
        pool_id: String,
        #[arg(long)]
        node_id: String,
    },
}

pub(crate) async fn run(config: &Config, format: Format, cmd: NodeCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        NodeCommand::List { pool_id } => {
            store.get_pool(&pool_id).await?;
            let columns = ["id", "state", "runningTasksCount", "runningTaskSlotsCount", "totalTasksRun", "hostName"];
            output::list(format, &store.list_nodes(&pool_id).await?, &columns)
        }
        NodeCommand::Show { pool_id, node_id } => output::one(format, &store.get_node(&pool_id, &node_id).await?),
    }
}
