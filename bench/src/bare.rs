//! The yardstick: the work of a drover task with lapin and redis alone, no drover code. A quorum
//! queue of its own; N messages published with confirms (all sent, then the confirms awaited)
//! while a consumer (prefetch 2 x children) takes them; per message one Redis write (HSET,
//! pipelined on one multiplexed connection), `/bin/true` spawned and awaited (at most `children`
//! at once), then the ack, coalesced into `multiple` acks.

use crate::budget::{self, Budget, Parties};
use crate::farm::{unlink_matching, Farm};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// How many finished messages one coalesced ack covers at most: capped at half the prefetch
/// window in `run` (2 x 8 children: prefetch 32, so 16).
const ACK_EVERY: u64 = 128;

/// What the bare pipeline measured.
pub(crate) struct Bare {
    pub(crate) messages: u64,
    pub(crate) children: u32,
    pub(crate) prefetch: u16,
    pub(crate) ack_every: u64,
    pub(crate) acks_sent: u64,
    /// First publish to last ack.
    pub(crate) seconds: f64,
    /// First publish to the last confirm.
    pub(crate) publish_seconds: f64,
    /// The machine's CPU per message, by party: `pipeline` is this process's (publisher and
    /// consumer), `tasks` the children's.
    pub(crate) cpu: Budget,
}

/// What a task of the pipeline ends with.
enum Done {
    Published(Duration),
    Acked(Duration, u64),
    Ran,
}

/// When the publisher and the acker finished (seconds from the first publish), and the acks sent.
#[derive(Default)]
struct Outcome {
    publish_seconds: Option<f64>,
    acked: Option<(f64, u64)>,
}

impl Outcome {
    fn note(&mut self, done: Done) {
        match done {
            Done::Published(at) => self.publish_seconds = Some(at.as_secs_f64()),
            Done::Acked(at, acks) => self.acked = Some((at.as_secs_f64(), acks)),
            Done::Ran => {}
        }
    }
}

/// Runs the bare pipeline over `n` messages with at most `children` processes at once.
pub(crate) async fn run(farm: &mut Farm, n: u64, children: u32) -> Result<Bare> {
    let queue = format!("drover-bench.bare.{}", std::process::id());
    farm.bare_queue = Some(queue.clone());
    let url = farm.config.amqp_url.first().context("no broker URL")?.clone();
    let prefetch = u16::try_from(children.saturating_mul(2)).unwrap_or(u16::MAX);
    // Half the prefetch window at most, or the window would fill with finished messages
    // waiting for their ack and the broker would stop delivering (see `acker`).
    let ack_every = ACK_EVERY.min(u64::from(prefetch / 2).max(1));
    // The consumer's and the publisher's connections, as a worker and a submitter have theirs.
    let consuming = Connection::connect(&url, ConnectionProperties::default())
        .await
        .context("connect to RabbitMQ (bare consumer)")?;
    let publishing = Connection::connect(&url, ConnectionProperties::default())
        .await
        .context("connect to RabbitMQ (bare publisher)")?;
    let ch = consuming.create_channel().await.context("open a channel")?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.context("basic.qos")?;
    let mut consumer = consume_own_queue(&ch, &queue, None).await?;
    let pch = publishing.create_channel().await.context("open a channel")?;
    pch.confirm_select(ConfirmSelectOptions::default()).await.context("confirm.select")?;
    let redis = farm.redis.clone();
    let key_prefix = format!("drover:{}:bare:", farm.account);
    let slots = Arc::new(Semaphore::new(children as usize));
    let (finished, finished_rx) = mpsc::unbounded_channel::<u64>();

    // Dropped (on error or Ctrl-C), the set aborts what is still running.
    let mut tasks: JoinSet<Result<Done>> = JoinSet::new();
    let mut outcome = Outcome::default();
    let counters0 = budget::sample(farm, parties()?).await?;
    let start = Instant::now();
    tasks.spawn(publish(pch, queue.clone(), n, start));
    tasks.spawn(acker(ch.clone(), finished_rx, n, ack_every, start));
    for received in 0..n {
        let delivery = match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(delivery)) => delivery.context("receive a message")?,
            Ok(None) => bail!("the consumer ended after {received} of {n} messages"),
            Err(_) => bail!("no message for 60 s ({received} of {n} received)"),
        };
        let (tag, mut redis, slots, finished) = (delivery.delivery_tag, redis.clone(), slots.clone(), finished.clone());
        let key = format!("{key_prefix}{tag}");
        tasks.spawn(async move {
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg("completed")
                .arg("exit")
                .arg(0)
                .query_async(&mut redis)
                .await
                .context("Redis HSET")?;
            let permit = slots.acquire_owned().await.context("the children's semaphore")?;
            let status = tokio::process::Command::new("/bin/true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .context("run /bin/true")?;
            drop(permit);
            if !status.success() {
                bail!("/bin/true failed: {status}");
            }
            finished.send(tag).map_err(|_| anyhow!("the acker is gone"))?;
            Ok(Done::Ran)
        });
        // Reap what has finished, so an error shows at once.
        while let Some(done) = tasks.try_join_next() {
            outcome.note(done.context("a pipeline task")??);
        }
    }
    drop(finished);
    while let Some(done) = tasks.join_next().await {
        outcome.note(done.context("a pipeline task")??);
    }
    let Outcome { publish_seconds, acked } = outcome;
    let (seconds, acks_sent) = acked.context("the acker did not finish")?;
    let publish_seconds = publish_seconds.context("the publisher did not finish")?;
    let cpu = Budget::between(&counters0, &budget::sample(farm, parties()?).await?, n);

    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("delete queue {queue}"))?;
    farm.bare_queue = None;
    let _ = consuming.close(200, "done".into()).await;
    let _ = publishing.close(200, "done".into()).await;
    unlink_matching(&mut farm.redis, &format!("{key_prefix}*")).await.context("delete the bare pipeline's keys")?;
    Ok(Bare { messages: n, children, prefetch, ack_every, acks_sent, seconds, publish_seconds, cpu })
}

/// The bare pipeline's parties: this process, and the children it reaped (its tasks: nothing
/// else ends meanwhile).
fn parties() -> Result<Parties> {
    let (own, reaped) = budget::own_and_reaped()?;
    Ok(Parties { tasks: reaped, pipeline: own, submitter: 0.0 })
}

/// Publishes `n` persistent messages to `queue`, pipelined: every one sent, then every confirm
/// awaited.
async fn publish(ch: Channel, queue: String, n: u64, start: Instant) -> Result<Done> {
    let mut confirms = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 1..=n {
        let body = format!(r#"{{"job":"bare","task":"{}"}}"#, crate::farm::task_id(i));
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .context("publish")?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm.await.context("publisher confirm")?;
        if !confirmation.is_ack() || confirmation.take_message().is_some() {
            bail!("the broker refused or returned a message");
        }
    }
    Ok(Done::Published(start.elapsed()))
}

/// Acks finished deliveries: one `multiple=true` ack over the unbroken run of finished tags
/// that starts at the lowest unacked tag, once that run holds `ack_every` tags, and for the
/// last run at the end (where it cannot grow any more). `ack_every` is at most half the
/// prefetch window, so the run always reaches it while the broker still delivers: the window
/// never fills with finished messages whose ack is being held back.
async fn acker(
    ch: Channel,
    mut finished: mpsc::UnboundedReceiver<u64>,
    n: u64,
    ack_every: u64,
    start: Instant,
) -> Result<Done> {
    let mut beyond = BTreeSet::new();
    // Delivery tags start at 1 on a channel.
    let (mut next, mut run, mut acked, mut acks) = (1u64, 0u64, 0u64, 0u64);
    while let Some(tag) = finished.recv().await {
        beyond.insert(tag);
        while beyond.remove(&next) {
            next += 1;
            run += 1;
        }
        if run >= ack_every || acked + run == n {
            ch.basic_ack(next - 1, BasicAckOptions { multiple: true }).await.context("ack")?;
            acked += run;
            run = 0;
            acks += 1;
        }
    }
    if acked != n {
        bail!("acked {acked} of {n} messages");
    }
    Ok(Done::Acked(start.elapsed(), acks))
}

/// The yardstick of dispatch latency, in µs, one message at a time on an idle quorum queue of its
/// own: a Redis write (the record), a publish (its confirm awaited after delivery, as drover's
/// submitter does not hold delivery back for it), the delivery, a Redis write (the start).
pub(crate) async fn dispatch(farm: &Farm, samples: u64) -> Result<Vec<u64>> {
    let queue = format!("drover-bench.bare-dispatch.{}", std::process::id());
    let url = farm.config.amqp_url.first().context("no broker URL")?.clone();
    let consuming = Connection::connect(&url, ConnectionProperties::default()).await.context("connect to RabbitMQ")?;
    let publishing = Connection::connect(&url, ConnectionProperties::default()).await.context("connect to RabbitMQ")?;
    let ch = consuming.create_channel().await.context("open a channel")?;
    // Gone a minute after its last use, should the bench stop before deleting it.
    let mut consumer = consume_own_queue(&ch, &queue, Some(60_000)).await?;
    let pch = publishing.create_channel().await.context("open a channel")?;
    pch.confirm_select(ConfirmSelectOptions::default()).await.context("confirm.select")?;
    let mut redis = farm.redis.clone();
    let key = format!("drover:{}:bare:dispatch", farm.account);
    let mut latencies = Vec::new();
    for i in 0..samples {
        let start = Instant::now();
        let _: () =
            redis::cmd("HSET").arg(&key).arg("ctime").arg(i).query_async(&mut redis).await.context("Redis HSET")?;
        let confirm = pch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .context("publish")?;
        let delivery = match tokio::time::timeout(Duration::from_secs(30), consumer.next()).await {
            Ok(Some(delivery)) => delivery.context("receive a message")?,
            _ => bail!("no delivery within 30 s"),
        };
        let _: () =
            redis::cmd("HSET").arg(&key).arg("start").arg(i).query_async(&mut redis).await.context("Redis HSET")?;
        latencies.push(start.elapsed().as_micros() as u64);
        delivery.ack(BasicAckOptions::default()).await.context("ack")?;
        confirm.await.context("confirm")?;
    }
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.context("Redis DEL")?;
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.context("delete the queue")?;
    latencies.sort_unstable();
    Ok(latencies)
}

/// Declares quorum queue `queue` (removed after `expires_ms` unused, when given) and consumes it.
async fn consume_own_queue(ch: &Channel, queue: &str, expires_ms: Option<u32>) -> Result<lapin::Consumer> {
    let mut queue_args = FieldTable::default();
    queue_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if let Some(ms) = expires_ms {
        queue_args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
    }
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, queue_args)
        .await
        .with_context(|| format!("declare queue {queue}"))?;
    ch.basic_consume(queue.into(), "drover-bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .with_context(|| format!("consume from {queue}"))
}
