//! `drover dead-letter list|replay`: what sits in the account's dead-letter queue, and why; and
//! putting its task messages back.

use crate::output::{self, Format};
use drover_core::queue::{self, Publisher, Topology, REASON_HEADER};
use drover_core::status::StatusStore;
use drover_core::Config;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

#[derive(clap::Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// List dead-lettered messages (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish the task messages of the dead-letter queue again to their job's pool when their
    /// task is active, and remove those whose task has nothing left to run; messages that are
    /// not tasks stay. Safe to repeat: a task runs once however many of its messages are queued.
    Replay {
        /// Look at most at this many messages.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetter {
    reason: Option<String>,
    pool_id: Option<String>,
    message_id: Option<String>,
    body: String,
}

fn header(headers: &lapin::types::FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        // Messages dead-lettered by the broker (delivery limit) carry x-death instead.
        other => Some(format!("{other:?}")),
    }
}

pub(crate) async fn run(config: &Config, format: Format, cmd: DeadLetterCommand) -> anyhow::Result<()> {
    let limit = match cmd {
        DeadLetterCommand::List { limit } => limit,
        DeadLetterCommand::Replay { limit } => return replay(config, format, limit).await,
    };
    let topology = Topology::new(&config.account);
    let connection = queue::connect(&config.broker(), "drover").await?;
    let channel = connection.create_channel().await?;
    topology.declare_account(&channel).await?;
    let mut letters = Vec::new();
    // Unacked gets; closing the channel puts every one of them back.
    while letters.len() < limit {
        let Some(m) = channel.basic_get(topology.dead_letters().into(), BasicGetOptions { no_ack: false }).await?
        else {
            break;
        };
        let props = &m.delivery.properties;
        let headers = props.headers().clone().unwrap_or_default();
        let reason = header(&headers, REASON_HEADER).or_else(|| header(&headers, "x-first-death-reason"));
        letters.push(DeadLetter {
            reason,
            pool_id: header(&headers, "x-drover-pool"),
            message_id: props.message_id().as_ref().map(|s| s.to_string()),
            body: String::from_utf8_lossy(&m.delivery.data).into_owned(),
        });
    }
    let _ = channel.close(200, "listed".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    output::list(format, &letters, &["reason", "poolId", "messageId", "body"])
}

async fn replay(config: &Config, format: Format, limit: usize) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    let publisher = Publisher::connect(&config.broker(), Topology::new(&config.account)).await?;
    let replay = drover_core::requeue::replay_dead_letters(&store, &publisher, limit).await;
    publisher.close().await;
    output::one(format, &replay?)
}
