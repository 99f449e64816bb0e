//! Requeue: putting back what an operator decides should run again — a job's active tasks whose
//! messages were lost, and the task messages in the dead-letter queue. Both go through
//! `requeue_tasks.lua` and an outbox (the one route to runnable), so running either twice, or
//! while the tasks' messages are still queued, runs no task twice.

use crate::model::TaskMessage;
use crate::queue::{self, Publisher};
use crate::status::StatusStore;
use crate::{Error, Result};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use std::collections::BTreeMap;

/// Task ids per script call.
const PAGE: usize = 1000;

/// Publishes again the messages of `job`'s tasks that are active and runnable (not waiting on
/// parents, blocked or parked); returns how many. For tasks recorded whose message is gone.
pub async fn requeue_job(store: &StatusStore, publisher: &Publisher, job: &str) -> Result<usize> {
    let pool = store.job_pool(job).await?;
    let tag = format!("requeue-{}", crate::model::now_ms());
    let (mut start, mut requeued) = (0, 0);
    loop {
        let ids = store.task_ids(job, start, PAGE).await?;
        if ids.is_empty() {
            return Ok(requeued);
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let outbox = store.requeue_tasks(job, &ids, &format!("{tag}-{start}")).await?;
        requeued += outbox.messages().len();
        publisher.publish_outbox(store, &pool, &outbox).await?;
        start += ids.len();
    }
}

/// What `replay_dead_letters` did with the messages it looked at.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    /// Task messages published again to their job's pool (the task is active).
    pub replayed: usize,
    /// Task messages removed: their task has completed, waits for what releases it, or is gone.
    pub removed: usize,
    /// Messages that are not tasks: left in the dead-letter queue.
    pub kept: usize,
}

/// Looks at up to `limit` messages of the account's dead-letter queue: a task message whose task
/// is active is published again to its job's pool, then removed; one whose task has nothing to
/// run is removed; anything else stays. A crash in between leaves the dead letters to replay
/// again (a task starts once).
pub async fn replay_dead_letters(store: &StatusStore, publisher: &Publisher, limit: usize) -> Result<Replay> {
    let topology = publisher.topology();
    let connection = queue::connect(publisher.broker(), "drover").await?;
    let channel = connection.create_channel().await?;
    topology.declare_account(&channel).await?;
    let mut by_job: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut replay = Replay::default();
    // Unacked gets: what is not acked goes back to the queue when the channel closes.
    for _ in 0..limit {
        let get = channel.basic_get(topology.dead_letters().into(), BasicGetOptions { no_ack: false }).await?;
        let Some(m) = get else { break };
        match TaskMessage::parse(&m.delivery.data) {
            Ok(task) => by_job.entry(task.job_id).or_default().push((task.task_id, m.delivery.delivery_tag)),
            Err(_) => replay.kept += 1,
        }
    }
    for (job, letters) in by_job {
        let ids: Vec<&str> = letters.iter().map(|(id, _)| id.as_str()).collect();
        let outbox = match store.job_pool(&job).await {
            Ok(pool) => {
                let outbox = store.requeue_tasks(&job, &ids, &format!("replay-{}", crate::model::now_ms())).await;
                match outbox {
                    Ok(outbox) => {
                        publisher.publish_outbox(store, &pool, &outbox).await?;
                        Some(outbox)
                    }
                    Err(Error::State(_) | Error::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                }
            }
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let republished = outbox.as_ref().map_or(0, |o| o.messages().len());
        replay.replayed += republished;
        replay.removed += letters.len() - republished.min(letters.len());
        for (_, tag) in letters {
            channel.basic_ack(tag, BasicAckOptions::default()).await?;
        }
    }
    let _ = channel.close(200, "replayed".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    Ok(replay)
}
