//! Dispatch: the node consumes its pool's three priority bands and starts the highest-priority
//! task it holds whenever enough of its slots are free, reconnecting when the broker goes away.

use super::{attempt, NodeContext};
use crate::model::node::{NodeState, TasksOption};
use crate::queue::{self, Band};
use crate::retry::Patience;
use crate::{Error, Result};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumes until `shutdown`, reconnecting to the broker (the next of its nodes when one goes)
/// whenever the connection is lost. Meanwhile the node's state is `unknown`: it takes no task.
/// An error means the broker refused what the node needs (a right, a missing queue).
pub(super) async fn consume(ctx: &Arc<NodeContext>, tracker: &TaskTracker, shutdown: &CancellationToken) -> Result<()> {
    let result = crate::retry::transient(
        "consuming",
        Patience::Forever,
        || shutdown.is_cancelled(),
        || async {
            let result = consume_once(ctx, tracker, shutdown).await;
            if result.is_err() && !shutdown.is_cancelled() {
                ctx.set_state(NodeState::Unknown).await;
            }
            result
        },
    )
    .await;
    match result {
        Err(e) if !shutdown.is_cancelled() => {
            tracing::error!(error = %e, "cannot consume the pool's queues; the node leaves");
            Err(e)
        }
        _ => Ok(()),
    }
}

/// A delivery held until a slot is free; the highest job priority starts first, then the oldest.
struct Held {
    priority: i32,
    seq: std::cmp::Reverse<u64>,
    /// The slots it takes (its `requiredSlots`, at most the node's).
    slots: u32,
    delivery: super::acks::Inbound,
    /// Its task message, read (and its signature checked) once; else why it is none.
    msg: std::result::Result<crate::model::TaskMessage, String>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(other.priority, other.seq))
    }
}

/// Starts consuming the pool's three band queues on `channel`: their deliveries as one stream,
/// and the consumer tags.
async fn consume_bands(
    ctx: &NodeContext,
    channel: &lapin::Channel,
    arguments: &FieldTable,
) -> Result<(futures_util::stream::SelectAll<lapin::Consumer>, Vec<String>)> {
    let mut consumers = Vec::new();
    let mut tags = Vec::new();
    for band in Band::ALL {
        let tag = format!("{}{}", ctx.options.node_id, band.suffix());
        let queue = ctx.topology.band_queue(&ctx.options.pool_id, band);
        consumers.push(
            channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    arguments.clone(),
                )
                .await
                .map_err(|e| queue::worker_refusal(&format!("consume {queue}"), e))?,
        );
        tags.push(tag);
    }
    Ok((futures_util::stream::select_all(consumers), tags))
}

/// What a node that stops taking tasks (its scheduling disabled, an order to leave) does to the
/// tasks it runs: kills them to hand them back (`requeue`), kills them (`terminate`), or lets
/// them finish.
pub(super) fn stop_running(ctx: &NodeContext, option: TasksOption) {
    if option == TasksOption::TaskCompletion {
        return;
    }
    if let (Ok(running), Ok(mut requeued)) = (ctx.running.lock(), ctx.requeued.lock()) {
        for (key, token) in running.iter() {
            if option == TasksOption::Requeue {
                requeued.insert(key.clone());
            }
            token.cancel();
        }
    }
}

/// Consumes the pool's three band queues on one channel, each with a prefetch of twice `slots`
/// (`slots` and the node's rank as consumer priority when the pool packs), and starts a held
/// delivery whenever enough of the node's `slots` are free for it (its
/// `requiredSlots`), highest priority first. While the node's scheduling is disabled it
/// consumes nothing (its running tasks keep their deliveries on the channel).
/// The lookahead matters: with a prefetch of only `slots`, the next high-priority message would
/// still be on its way from the broker when a slot frees, and a held low-priority one would take
/// the slot. So with a backlog of low-priority tasks, a higher-priority job's tasks start next
/// on every node (at most `2 × slots` low-priority messages wait in each node's hand meanwhile),
/// and a node always has its next task at hand when a slot frees.
async fn consume_once(ctx: &Arc<NodeContext>, tracker: &TaskTracker, shutdown: &CancellationToken) -> Result<()> {
    let (slots, free) = (ctx.slots, &ctx.free);
    let connection = queue::connect(&ctx.config.broker(), &format!("drover-worker {}", ctx.options.node_id)).await?;
    let channel = connection.create_channel().await?;
    ctx.topology.check_pool(&channel, &ctx.options.pool_id).await?;
    // A packing node takes no lookahead: a message it held would wait while a lower node idles.
    let prefetch = if ctx.fill_rank.is_some() { slots } else { slots.saturating_mul(2) };
    channel.basic_qos(prefetch.min(u16::MAX as u32) as u16, BasicQosOptions::default()).await?;
    let mut arguments = FieldTable::default();
    if let Some(rank) = ctx.fill_rank {
        arguments.insert("x-priority".into(), lapin::types::AMQPValue::LongInt(rank));
    }
    let mut scheduling = ctx.scheduling.subscribe();
    let mut paused = scheduling.borrow_and_update().is_some();
    let (mut deliveries, mut tags) = if paused {
        (futures_util::stream::select_all(Vec::new()), Vec::new())
    } else {
        consume_bands(ctx, &channel, &arguments).await?
    };
    tracing::info!(queue = %ctx.topology.pool_queue(&ctx.options.pool_id), paused, "consuming");
    // Joining, or back from a lost broker: the node takes tasks now, and only now shows it.
    if [NodeState::Starting, NodeState::WaitingForStartTask, NodeState::Unknown].into_iter().any(|s| ctx.state_is(s)) {
        ctx.set_state(NodeState::Idle).await;
    }
    // Acks go a lookahead's worth at a time: the held ones never take the node's running slots.
    let acks = super::acks::Acks::start(prefetch.saturating_sub(slots) as usize);
    let _closing = super::acks::Closing(acks.clone());
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Stop taking work; deliveries not started go back to the queue with the channel.
                for tag in &tags {
                    let _ = channel.basic_cancel(tag.as_str().into(), Default::default()).await;
                }
                super::drain(ctx, tracker).await;
                acks.finish().await;
                let _ = connection.close(200, "node leaving".into()).await;
                return Ok(());
            }
            permit = free.clone().acquire_many_owned(held.peek().map_or(1, |h| h.slots)), if !held.is_empty() => {
                let (Ok(permit), Some(next)) = (permit, held.pop()) else { continue };
                tracker.spawn(attempt::handle(ctx.clone(), next.delivery, next.msg, permit));
            }
            _ = scheduling.changed() => {
                let disabled = *scheduling.borrow_and_update();
                match disabled {
                    Some(option) if !paused => {
                        // Scheduling disabled: take nothing more, give back what is held, and
                        // requeue, terminate or keep the running tasks as the option says.
                        for tag in tags.drain(..) {
                            let _ = channel.basic_cancel(tag.as_str().into(), Default::default()).await;
                        }
                        // Deliveries already on their way when the consumers ended go back too.
                        let rest = async {
                            while let Some(Ok(delivery)) = deliveries.next().await {
                                queue::requeue(&delivery).await;
                            }
                        };
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rest).await;
                        for h in held.drain() {
                            h.delivery.requeue().await;
                        }
                        paused = true;
                        stop_running(ctx, option);
                        tracing::info!(option = option.as_str(), "scheduling disabled: the node takes no task");
                    }
                    None if paused => {
                        (deliveries, tags) = consume_bands(ctx, &channel, &arguments).await?;
                        paused = false;
                        tracing::info!("scheduling enabled: the node takes tasks again");
                    }
                    _ => {}
                }
            }
            next = deliveries.next(), if !paused => match next {
                Some(Ok(delivery)) => {
                    // A malformed message sorts first, to be dead-lettered at once. A task that needs
                    // more slots than the node has takes all of them (submission refuses more
                    // than the pool's taskSlotsPerNode; this node was started with fewer).
                    let delivery = acks.track(delivery);
                    let msg = super::attempt::read_message(ctx, delivery.data());
                    let (priority, need) = msg.as_ref().map_or((i32::MAX, 1), |m| (m.priority, m.slots.clamp(1, slots)));
                    seq += 1;
                    held.push(Held { priority, seq: std::cmp::Reverse(seq), slots: need, delivery, msg });
                }
                Some(Err(e)) => return Err(Error::Amqp(e)),
                None => return Err(Error::BrokerLost("the broker cancelled the consumer".into())),
            }
        }
    }
}
