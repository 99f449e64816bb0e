//! The RabbitMQ side: the account's topology (one quorum queue per pool), the confirmed publisher
//! that publishes outboxes, and acknowledging deliveries.
//!
//! Topology for account `A`: tasks are published to the direct exchange `drover.A.tasks` with the
//! pool id as routing key, into the durable quorum queue `drover.A.pool.P`. Quorum queues have no
//! message priorities (RabbitMQ 3.10), so a pool has one queue per priority [`Band`]: jobs with
//! `priority` > 0 go to `drover.A.pool.P.high` (routing key `P.high`), < 0 to `drover.A.pool.P.low`;
//! a node consumes all three and starts the highest-priority message it holds first. A message delivered
//! more than [`DELIVERY_LIMIT`] times (its node died every time) or rejected as malformed goes to
//! the fanout exchange `drover.A.dead` and its queue `drover.A.dead`.

use crate::config::Redacted;
use crate::model::TaskMessage;
use crate::retry::Patience;
use crate::status::{Outbox, StatusStore};
use crate::{Error, Result};
use lapin::options::{
    BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

/// How often the broker returns one message to the queue before dead-lettering it. A backstop
/// only: returns also count messages a lost node had merely prefetched, so the poison-task limit
/// is kept per task in Redis ([`crate::status::MAX_LOST_ATTEMPTS`]), which counts lost attempts.
pub const DELIVERY_LIMIT: i64 = 50;

/// The header that says why a message was dead-lettered by drover.
pub const REASON_HEADER: &str = "x-drover-reason";

/// A pool's priority band: its own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    High,
    Normal,
    Low,
}

impl Band {
    /// Every band, highest first.
    pub const ALL: [Band; 3] = [Band::High, Band::Normal, Band::Low];

    /// The band of a job priority (-1000..1000).
    pub fn of(priority: i32) -> Band {
        match priority {
            p if p > 0 => Band::High,
            p if p < 0 => Band::Low,
            _ => Band::Normal,
        }
    }

    /// What the band adds to the pool's queue name and routing key.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Band::High => ".high",
            Band::Normal => "",
            Band::Low => ".low",
        }
    }
}

/// A worker's broker error on `what`, with what to do when the broker refused it (a right the
/// worker's user lacks, or a queue nobody made); any other error stays as it is.
pub(crate) fn worker_refusal(what: &str, e: lapin::Error) -> Error {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let hint = match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                "the worker's broker user needs the read right on its pool's queues and on the account's exchanges, and write on the exchanges; no configure (see broker-config/README.md)"
            }
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                "create the pool with `drover pool create`, or load broker-config's definitions"
            }
            _ => return Error::Amqp(e),
        },
        _ => return Error::Amqp(e),
    };
    Error::BrokerRefused(format!("{what}: {e} ({hint})"))
}

/// Names of an account's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    account: String,
}

impl Topology {
    /// The topology of `account`.
    pub fn new(account: &str) -> Self {
        Topology { account: account.into() }
    }

    /// The exchange task messages are published to.
    pub fn tasks_exchange(&self) -> String {
        format!("drover.{}.tasks", self.account)
    }

    /// The exchange (and queue) of dead letters.
    pub fn dead_letters(&self) -> String {
        format!("drover.{}.dead", self.account)
    }

    /// The queue of a pool (its normal band).
    pub fn pool_queue(&self, pool: &str) -> String {
        self.band_queue(pool, Band::Normal)
    }

    /// The queue of one of a pool's priority bands.
    pub fn band_queue(&self, pool: &str, band: Band) -> String {
        format!("drover.{}.pool.{pool}{}", self.account, band.suffix())
    }

    /// The routing key of a message of a job with `priority` to `pool`.
    pub fn routing_key(pool: &str, priority: i32) -> String {
        format!("{pool}{}", Band::of(priority).suffix())
    }

    /// Declares the account's exchanges and dead-letter queue (idempotent).
    pub async fn declare_account(&self, ch: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(self.tasks_exchange().into(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
        ch.exchange_declare(self.dead_letters().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare(self.dead_letters().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await?;
        ch.queue_bind(
            self.dead_letters().into(),
            self.dead_letters().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    /// Checks that a pool's queues and the account's exchanges exist (as `drover pool create` or
    /// broker-config's definitions made them), declaring nothing: a worker needs no `configure`
    /// right. The error names what is missing and how to make it.
    pub async fn check_pool(&self, ch: &Channel, pool: &str) -> Result<()> {
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        let missing = |what: String| move |e: lapin::Error| worker_refusal(&what, e);
        for exchange in [self.tasks_exchange(), self.dead_letters()] {
            let kind = if exchange == self.dead_letters() { ExchangeKind::Fanout } else { ExchangeKind::Direct };
            ch.exchange_declare(exchange.as_str().into(), kind, passive, FieldTable::default())
                .await
                .map_err(missing(format!("exchange {exchange}")))?;
        }
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        for band in Band::ALL {
            let queue = self.band_queue(pool, band);
            ch.queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(missing(format!("queue {queue}")))?;
        }
        Ok(())
    }

    /// Declares a pool's quorum queues (one per band) and binds them (idempotent).
    pub async fn declare_pool(&self, ch: &Channel, pool: &str) -> Result<()> {
        self.declare_account(ch).await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_letters().into()));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        for band in Band::ALL {
            let queue = self.band_queue(pool, band);
            let options = QueueDeclareOptions { durable: true, ..Default::default() };
            ch.queue_declare(queue.as_str().into(), options, args.clone()).await?;
            let key = format!("{pool}{}", band.suffix());
            let bind = QueueBindOptions::default();
            ch.queue_bind(queue.into(), self.tasks_exchange().into(), key.into(), bind, FieldTable::default()).await?;
        }
        Ok(())
    }

    /// Deletes a pool's queues and whatever is queued in them; returns how many messages went.
    pub async fn delete_pool(&self, ch: &Channel, pool: &str) -> Result<u32> {
        let mut purged = 0;
        for band in Band::ALL {
            purged += ch.queue_delete(self.band_queue(pool, band).into(), QueueDeleteOptions::default()).await?;
        }
        Ok(purged)
    }
}

/// The AMQP heartbeat drover asks for unless the URL sets one: a frozen or cut-off peer is noticed
/// within about twice this, and its unacked messages go back to the queue.
pub const HEARTBEAT_SECS: u16 = 10;

/// How long one broker node may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker node of `urls` that this program last reached: connections start there, so a
/// program's connections stay on one node and fail over together.
static CURRENT_NODE: AtomicUsize = AtomicUsize::new(0);

/// Parses the broker URL at `position` (0-based) of the list, naming it in the error.
pub fn parse_url(url: &str, position: usize) -> Result<lapin::uri::AMQPUri> {
    let url = url.trim();
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(|e: String| {
        // Some of the parser's errors quote the whole URL.
        let e = e.replace(url, &Redacted(url).to_string());
        Error::invalid(format!("amqp-url {} ({}): {e}", position + 1, Redacted(url)))
    })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(HEARTBEAT_SECS);
    }
    Ok(uri)
}

/// The broker: its nodes' URLs and, for `amqps://`, the authorities to trust besides the
/// system's.
#[derive(Debug, Clone)]
pub struct Broker {
    pub urls: Vec<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// Connects to one of the broker's nodes, naming the connection after the program (shown in the
/// management UI). It starts with the node the program last reached and tries each in turn; the
/// error is the last node's when none answers.
pub async fn connect(broker: &Broker, name: &str) -> Result<Connection> {
    let urls = &broker.urls;
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: broker.ca_file.as_deref().map(crate::tls::ca_pem).transpose()?,
    };
    let runtime = lapin::runtime::default_runtime()?;
    let start = CURRENT_NODE.load(AtomicOrdering::Relaxed);
    let mut last = Error::invalid("amqp-url: at least one broker URL is needed");
    for k in 0..urls.len() {
        let i = (start + k) % urls.len();
        let uri = parse_url(&urls[i], i)?;
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let connect = Connection::connect_uri_with_config(uri, props, tls.clone(), runtime.clone());
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
        match attempt {
            Ok(Ok(connection)) => {
                if i != start {
                    tracing::info!(url = %Redacted(&urls[i]), "connected to another broker node");
                }
                CURRENT_NODE.store(i, AtomicOrdering::Relaxed);
                return Ok(connection);
            }
            Ok(Err(e)) => {
                tracing::debug!(url = %Redacted(&urls[i]), error = %e, "amqp connect failed");
                last = Error::Amqp(e);
            }
            Err(_) => {
                tracing::debug!(url = %Redacted(&urls[i]), "amqp connect timed out");
                last = Error::BrokerLost(format!("broker node {} did not answer within {CONNECT_TIMEOUT:?}", i + 1));
            }
        }
    }
    Err(last)
}

/// The properties of a task message: persistent, JSON, the task id as message id.
pub fn task_properties(task_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(task_id.into())
}

/// Publishes task messages with publisher confirms, on its own connection, shared by every
/// caller (`&self`): the CLI's submission and a node's attempts alike. Messages unconfirmed when
/// the connection fails are published again on a new one (a duplicate is harmless: the status
/// store starts a task once).
pub struct Publisher {
    broker: Broker,
    name: String,
    topology: Topology,
    /// The open connection and its confirm-mode channel, opened on first use and after a failure.
    link: tokio::sync::Mutex<Option<(Connection, Channel)>>,
    /// How long to keep trying to reach the broker before giving up.
    patience: Duration,
}

impl Publisher {
    /// A publisher that connects when first used; `name` is shown in the broker's management UI.
    pub fn new(broker: &Broker, name: &str, topology: Topology) -> Self {
        Publisher {
            broker: broker.clone(),
            name: name.into(),
            topology,
            link: tokio::sync::Mutex::new(None),
            patience: Duration::from_secs(120),
        }
    }

    /// A publisher connected now (so a command fails at once when the broker is unreachable).
    pub async fn connect(broker: &Broker, topology: Topology) -> Result<Self> {
        let publisher = Publisher::new(broker, "drover", topology);
        publisher.channel().await?;
        Ok(publisher)
    }

    /// The broker it publishes to.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The topology it publishes into.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A confirm-mode channel on the open connection, opening one if needed.
    pub async fn channel(&self) -> Result<Channel> {
        let mut link = self.link.lock().await;
        if let Some((connection, channel)) = link.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let connection = connect(&self.broker, &self.name).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *link = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// How many messages `pool`'s band queues hold ready for a consumer (those delivered and not
    /// yet acked are not counted). On a channel of its own: a missing queue closes it.
    pub async fn ready_messages(&self, pool: &str) -> Result<u32> {
        self.channel().await?;
        let ch = match self.link.lock().await.as_ref() {
            Some((connection, _)) => connection.create_channel().await?,
            None => return Err(Error::BrokerLost("no connection".into())),
        };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut ready = 0u32;
        for band in Band::ALL {
            let queue = ch.queue_declare(self.topology.band_queue(pool, band).into(), passive, FieldTable::default());
            ready = ready.saturating_add(queue.await?.message_count());
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(ready)
    }

    /// Publishes `messages` to `pool`'s queues (each to its priority band) and returns once the
    /// broker has confirmed every one. A connection failure is waited out; a refusal is an error.
    pub async fn publish(&self, pool: &str, messages: &[TaskMessage]) -> Result<()> {
        let pending = std::sync::Mutex::new(messages.iter().collect::<Vec<_>>());
        let pending = &pending;
        crate::retry::transient(
            "publish",
            Patience::For(self.patience),
            || false,
            move || async move {
                let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
                let lost = self.publish_once(pool, &batch).await?;
                if lost.is_empty() {
                    return Ok(());
                }
                let n = lost.len();
                *pending.lock().unwrap_or_else(|e| e.into_inner()) = lost;
                Err(Error::BrokerLost(format!("{n} messages were not confirmed")))
            },
        )
        .await
    }

    /// Sends `messages` once; returns those whose confirm was lost with the connection.
    async fn publish_once<'m>(&self, pool: &str, messages: &[&'m TaskMessage]) -> Result<Vec<&'m TaskMessage>> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        let mut lost = Vec::new();
        let bodies: Vec<Vec<u8>> = messages.iter().map(|m| m.to_bytes()).collect();
        // Every publish is handed to lapin at once, in order: its I/O loop then writes many
        // messages' frames with one write, instead of one write (and a thread hand-off) each.
        let sent = futures_util::future::join_all(messages.iter().zip(&bodies).map(|(message, body)| {
            channel.basic_publish(
                self.topology.tasks_exchange().into(),
                Topology::routing_key(pool, message.priority).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                task_properties(&message.task_id),
            )
        }))
        .await;
        for (message, sent) in messages.iter().zip(sent) {
            match sent {
                Ok(confirm) => confirms.push((*message, confirm)),
                Err(e) => {
                    if lost.is_empty() {
                        tracing::warn!(error = %e, "lost the broker while publishing");
                    }
                    lost.push(*message);
                }
            }
        }
        for (message, confirm) in confirms {
            match confirm.await {
                Ok(c) if c.is_ack() => {
                    if c.take_message().is_some() {
                        return Err(Error::NotFound { kind: "queue of pool", id: pool.into() });
                    }
                }
                Ok(_) => {
                    return Err(Error::BrokerRefused(format!(
                        "task {:?} (the queue of pool {pool:?} is full or unavailable)",
                        message.task_id
                    )))
                }
                Err(_) => lost.push(message),
            }
        }
        if !lost.is_empty() {
            *self.link.lock().await = None;
        }
        Ok(lost)
    }

    /// Publishes what a transition made runnable, then clears its outbox: the one way a task
    /// reaches a queue. Until the outbox is cleared, a crash leaves it to be published again.
    pub async fn publish_outbox(&self, store: &StatusStore, pool: &str, outbox: &Outbox) -> Result<()> {
        if outbox.is_empty() {
            return Ok(());
        }
        // Boxed: most outboxes are empty, and a caller's future need not hold this one's state.
        Box::pin(async {
            self.publish(pool, outbox.messages()).await?;
            crate::retry::transient(
                "clear_outbox",
                Patience::For(self.patience),
                || false,
                || store.clear_outbox(outbox),
            )
            .await
        })
        .await
    }

    /// Moves a message that is not a runnable task to the account's dead-letter queue, saying why.
    pub async fn dead_letter(&self, pool: &str, body: &[u8], reason: &str) -> Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        headers.insert("x-drover-pool".into(), AMQPValue::LongString(pool.into()));
        let properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        let exchange = self.topology.dead_letters();
        // Boxed, like a non-empty outbox's publish: rare, and a caller's future need not hold it.
        let confirm = Box::pin(async {
            let channel = self.channel().await?;
            let publish = BasicPublishOptions::default();
            Ok::<_, Error>(
                channel.basic_publish(exchange.as_str().into(), "".into(), publish, body, properties).await?.await?,
            )
        })
        .await?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(Error::BrokerRefused("the dead letter".into()))
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        if let Some((connection, _)) = self.link.into_inner() {
            let _ = connection.close(200, "bye".into()).await;
        }
    }
}

/// Hands a delivery back to its queue (for this or another node to take).
pub async fn requeue(delivery: &lapin::message::Delivery) {
    if let Err(e) = delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
        tracing::debug!(error = %e, "nack failed (the message comes back with the channel)");
    }
}
