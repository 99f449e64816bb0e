//! The RabbitMQ side: the account's topology (one quorum queue per pool) and the confirmed publisher.
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
use crate::{Error, Result};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use std::collections::VecDeque;
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

    fn suffix(self) -> &'static str {
        match self {
            Band::High => ".high",
            Band::Normal => "",
            Band::Low => ".low",
        }
    }
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

/// Connects to RabbitMQ, naming the connection after the program (shown in the management UI).
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let mut uri: lapin::uri::AMQPUri =
        url.parse().map_err(|e| Error::invalid(format!("amqp url {}: {e}", Redacted(url))))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(HEARTBEAT_SECS);
    }
    Connection::connect_uri(uri, props).await.map_err(|e| {
        tracing::debug!(url = %Redacted(url), error = %e, "amqp connect failed");
        Error::Amqp(e)
    })
}

/// The properties of a task message: persistent, JSON, the task id as message id.
pub fn task_properties(task_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(task_id.into())
}

struct Pending {
    pool: String,
    message: TaskMessage,
    /// None once the channel it was sent on failed: it must be sent again.
    confirm: Option<PublisherConfirm>,
}

/// Publishes task messages with publisher confirms pipelined in a bounded window. Messages not
/// yet confirmed when the connection fails are published again on a new connection (a duplicate is
/// harmless: the status store starts a task once).
pub struct Publisher {
    url: String,
    topology: Topology,
    connection: Connection,
    channel: Channel,
    pending: VecDeque<Pending>,
    window: usize,
    retry_for: Duration,
}

impl Publisher {
    /// A publisher on a new connection, with at most `window` unconfirmed messages.
    pub async fn connect(url: &str, topology: Topology, window: usize) -> Result<Self> {
        let (connection, channel) = Self::open(url).await?;
        Ok(Publisher {
            url: url.into(),
            topology,
            connection,
            channel,
            pending: VecDeque::new(),
            window: window.max(1),
            retry_for: Duration::from_secs(120),
        })
    }

    async fn open(url: &str) -> Result<(Connection, Channel)> {
        let connection = connect(url, "drover").await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok((connection, channel))
    }

    /// The channel, for declaring topology.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `message` to `pool`'s queue. It is confirmed by the time [`Publisher::flush`]
    /// returns Ok.
    pub async fn publish(&mut self, pool: &str, message: TaskMessage) -> Result<()> {
        while self.pending.len() >= self.window {
            self.settle_one().await?;
        }
        loop {
            match self.send(pool, &message).await {
                Ok(confirm) => {
                    self.pending.push_back(Pending { pool: pool.into(), message, confirm: Some(confirm) });
                    return Ok(());
                }
                Err(e) => self.recover(e).await?,
            }
        }
    }

    /// Waits until every published message is confirmed.
    pub async fn flush(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn send(&self, pool: &str, message: &TaskMessage) -> Result<PublisherConfirm> {
        Ok(self
            .channel
            .basic_publish(
                self.topology.tasks_exchange().into(),
                Topology::routing_key(pool, message.priority).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &message.to_bytes(),
                task_properties(&message.task_id),
            )
            .await?)
    }

    async fn settle_one(&mut self) -> Result<()> {
        let Some(mut p) = self.pending.pop_front() else { return Ok(()) };
        let Some(confirm) = p.confirm.take() else {
            self.pending.push_front(p);
            return self.recover(Error::State("unsent messages".into())).await;
        };
        match confirm.await {
            Ok(c) if c.is_ack() => match c.take_message() {
                None => Ok(()),
                Some(_) => Err(Error::NotFound { kind: "queue of pool", id: p.pool }),
            },
            Ok(_) => Err(Error::State(format!(
                "the broker refused task {:?} (queue of pool {:?} full or unavailable)",
                p.message.task_id, p.pool
            ))),
            Err(e) => {
                self.pending.push_front(p);
                self.recover(Error::Amqp(e)).await
            }
        }
    }

    /// Reconnects and publishes every unconfirmed message again.
    async fn recover(&mut self, error: Error) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        tracing::warn!(error = %error, "lost the broker; reconnecting to publish unconfirmed messages again");
        let mut delay = Duration::from_millis(200);
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            let Ok((connection, channel)) = Self::open(&self.url).await else { continue };
            self.connection = connection;
            self.channel = channel;
            let pending = std::mem::take(&mut self.pending);
            let mut ok = true;
            for p in pending {
                match self.send(&p.pool, &p.message).await {
                    Ok(confirm) => self.pending.push_back(Pending { confirm: Some(confirm), ..p }),
                    Err(_) => {
                        self.pending.push_back(Pending { confirm: None, ..p });
                        ok = false;
                    }
                }
            }
            if ok {
                return Ok(());
            }
        }
    }

    /// Closes the connection after flushing.
    pub async fn close(mut self) -> Result<()> {
        self.flush().await?;
        let _ = self.connection.close(200, "bye".into()).await;
        Ok(())
    }
}
