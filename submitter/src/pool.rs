//! `drover pool ...`

use crate::ids::PoolId;
use crate::output::{self, Format};
use drover_core::model::{IsoDuration, PoolAddParameter};
use drover_core::status::StatusStore;
use drover_core::Config;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum PoolCommand {
    /// Create a pool and its queue: give --pool-id, or --json-file.
    ///
    /// Creating a pool again with the same spec changes nothing; a different spec under an
    /// existing id is refused ("already exists"): delete the pool first, or pick another id.
    #[command(after_long_help = CREATE_EXAMPLES, group = clap::ArgGroup::new("spec").required(true))]
    Create {
        /// The new pool's id (letters, digits, '-' and '_'; at most 64).
        #[arg(long, value_name = "POOL", group = "spec")]
        pool_id: Option<String>,
        /// How many task slots each node of the pool offers (with --pool-id).
        #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "json_file")]
        task_slots_per_node: u32,
        /// A PoolAddParameter JSON file (id, taskSlotsPerNode, startTask, targetDedicatedNodes,
        /// enableAutoScale, autoScaleFormula, autoScaleEvaluationInterval, metadata): the fields
        /// are described in README.md, section "Pools, nodes and autoscaling".
        #[arg(long, value_name = "FILE", group = "spec")]
        json_file: Option<PathBuf>,
    },
    /// List pools.
    List,
    /// How many nodes of each pool are in each state (Azure's pool node counts).
    NodeCounts,
    /// Show one pool, with its live node count and last autoscale run.
    Show(PoolId),
    /// Delete a pool and its queue.
    Delete(PoolId),
    /// Set how many nodes the pool asks for (drover-monitor --autoscale starts or stops workers
    /// to match); refused while an autoscale formula sizes the pool.
    Resize {
        #[command(flatten)]
        pool: PoolId,
        /// The number of nodes.
        #[arg(long, value_name = "N")]
        target_dedicated_nodes: u32,
    },
    /// Change a pool's startTask, applicationPackageReferences or metadata (Azure's pool patch:
    /// a JSON object of the fields to change); nodes use them when they next join.
    Patch {
        #[command(flatten)]
        pool: PoolId,
        /// The changes, as JSON: {"startTask": {"commandLine": "..."}, "metadata": [...]}.
        #[arg(long, value_name = "FILE")]
        json_file: PathBuf,
        /// Azure's update properties instead: the fields left out go back to their defaults.
        #[arg(long)]
        replace: bool,
    },
    /// Autoscaling: evaluate a formula, turn it on or off.
    #[command(subcommand)]
    Autoscale(AutoscaleCommand),
}

const CREATE_EXAMPLES: &str = "Examples:
  drover pool create --pool-id render --task-slots-per-node 4
  drover pool create --json-file pool.json   # {\"id\": \"render\", \"taskSlotsPerNode\": 4, \"startTask\": {\"commandLine\": \"...\"}}
Then start a worker on each node: drover-worker --pool-id render";

#[derive(clap::Subcommand)]
pub(crate) enum AutoscaleCommand {
    /// Evaluate a formula against the pool's recent samples without acting (Azure's Evaluate).
    Evaluate {
        #[command(flatten)]
        pool: PoolId,
        /// The formula (default: the pool's own).
        #[arg(long)]
        formula: Option<String>,
    },
    /// Let the formula set the pool's size (drover-monitor --autoscale acts on it).
    Enable {
        #[command(flatten)]
        pool: PoolId,
        /// An Azure Batch autoscale formula that sets $TargetDedicatedNodes (README.md,
        /// section "Pools, nodes and autoscaling").
        #[arg(long)]
        formula: String,
        /// How often the formula is evaluated: ISO 8601, at least PT1S (default PT15S).
        #[arg(long, value_name = "DURATION")]
        evaluation_interval: Option<String>,
    },
    /// Stop autoscaling the pool (its workers are left as they are).
    Disable(PoolId),
}

pub(crate) async fn run(config: &Config, format: Format, cmd: PoolCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        PoolCommand::Create { pool_id, task_slots_per_node, json_file } => {
            let spec = match (json_file, pool_id) {
                (Some(path), _) => crate::read_json::<PoolAddParameter>(&path, "PoolAddParameter")?,
                (None, Some(id)) => PoolAddParameter::new(&id, task_slots_per_node),
                (None, None) => anyhow::bail!("give --pool-id, or --json-file"),
            };
            drover_core::actions::create_pool(config, &store, &spec, None).await?;
            output::one(format, &store.get_pool(&spec.id).await?)
        }
        PoolCommand::List => {
            output::list(format, &store.list_pools().await?, &["id", "taskSlotsPerNode", "state", "creationTime"])
        }
        PoolCommand::NodeCounts => {
            let columns = ["poolId", "dedicated.total", "dedicated.idle", "dedicated.running", "dedicated.offline"];
            output::list(format, &drover_core::actions::node_counts(&store).await?, &columns)
        }
        PoolCommand::Show(PoolId { pool_id }) => output::one(format, &store.pool_status(&pool_id).await?),
        PoolCommand::Autoscale(AutoscaleCommand::Evaluate { pool: PoolId { pool_id }, formula }) => {
            let run = drover_core::actions::evaluate_autoscale(&store, &pool_id, formula.as_deref()).await?;
            if let Some(e) = &run.error {
                anyhow::bail!("formula: {}", e.message);
            }
            output::one(format, &run)
        }
        PoolCommand::Autoscale(AutoscaleCommand::Enable { pool: PoolId { pool_id }, formula, evaluation_interval }) => {
            let interval = evaluation_interval
                .map(|i| {
                    serde_json::from_value::<IsoDuration>(serde_json::Value::String(i))
                        .map_err(|e| anyhow::anyhow!("--evaluation-interval: {e}"))
                })
                .transpose()?;
            output::one(format, &store.set_autoscale(&pool_id, Some(&formula), interval).await?)
        }
        PoolCommand::Autoscale(AutoscaleCommand::Disable(PoolId { pool_id })) => {
            output::one(format, &store.set_autoscale(&pool_id, None, None).await?)
        }
        PoolCommand::Resize { pool: PoolId { pool_id }, target_dedicated_nodes } => {
            output::one(format, &store.resize_pool(&pool_id, target_dedicated_nodes).await?)
        }
        PoolCommand::Patch { pool: PoolId { pool_id }, json_file, replace } => {
            let shown = json_file.display();
            let change = crate::read_json_value(&json_file)?;
            drover_core::actions::change_pool(&store, &pool_id, &change, replace)
                .await
                .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            output::one(format, &store.pool_status(&pool_id).await?)
        }
        PoolCommand::Delete(PoolId { pool_id }) => {
            Ok(drover_core::actions::delete_pool(config, &store, &pool_id).await?)
        }
    }
}
