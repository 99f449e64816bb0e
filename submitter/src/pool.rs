//! `drover pool ...`

use crate::output::{self, Format};
use drover_core::model::PoolAddParameter;
use drover_core::queue::{self, Topology};
use drover_core::status::StatusStore;
use drover_core::Config;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum PoolCommand {
    /// Create a pool and its queue (creating the same pool again changes nothing).
    Create {
        #[arg(long, required_unless_present = "json_file", conflicts_with = "json_file")]
        pool_id: Option<String>,
        #[arg(long, default_value_t = 1, conflicts_with = "json_file")]
        task_slots_per_node: u32,
        /// A PoolAddParameter-like JSON file.
        #[arg(long)]
        json_file: Option<PathBuf>,
    },
    /// List pools.
    List,
    /// Show one pool.
    Show {
        #[arg(long)]
        pool_id: String,
    },
    /// Delete a pool and its queue.
    Delete {
        #[arg(long)]
        pool_id: String,
    },
}

pub(crate) async fn run(config: &Config, format: Format, cmd: PoolCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        PoolCommand::Create { pool_id, task_slots_per_node, json_file } => {
            let spec = match json_file {
                Some(path) => crate::read_json::<PoolAddParameter>(&path)?,
                None => PoolAddParameter::new(pool_id.as_deref().unwrap_or_default(), task_slots_per_node),
            };
            spec.validate()?;
            let connection = queue::connect(&config.amqp_url, "drover").await?;
            let channel = connection.create_channel().await?;
            Topology::new(&config.account).declare_pool(&channel, &spec.id).await?;
            let _ = connection.close(200, "bye".into()).await;
            store.create_pool(&spec).await?;
            output::one(format, &store.get_pool(&spec.id).await?)
        }
        PoolCommand::List => {
            output::list(format, &store.list_pools().await?, &["id", "taskSlotsPerNode", "state", "creationTime"])
        }
        PoolCommand::Show { pool_id } => output::one(format, &store.get_pool(&pool_id).await?),
        PoolCommand::Delete { pool_id } => {
            store.get_pool(&pool_id).await?;
            let connection = queue::connect(&config.amqp_url, "drover").await?;
            let channel = connection.create_channel().await?;
            Topology::new(&config.account).delete_pool(&channel, &pool_id).await?;
            let _ = connection.close(200, "bye".into()).await;
            store.delete_pool(&pool_id).await?;
            Ok(())
        }
    }
}
