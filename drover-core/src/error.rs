//! The crate's error type: each variant says what the user (or operator) can do about it.

use std::fmt;

/// Result with drover's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in drover. A refused request carries the field or id at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; nothing was changed. The message names the field or id at fault.
    #[error("{0}")]
    Invalid(String),
    /// A named pool, job or task does not exist.
    #[error("{kind} {id:?} does not exist")]
    NotFound { kind: &'static str, id: String },
    /// The object exists already (a duplicate id).
    #[error("{kind} {id:?} already exists")]
    Conflict { kind: &'static str, id: String },
    /// The object is in a state that does not allow the request (a job that is not active...).
    #[error("{0}")]
    State(String),
    /// A stored record cannot be read (written by an incompatible build, or edited by hand).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A stored record does not verify against the account's signing keys, or is not valid: it
    /// was changed in the store, and nothing it describes is run.
    #[error("{0}")]
    Refused(String),
    /// The broker refused a message: the queue is missing, full or unavailable.
    #[error("rabbitmq refused: {0}")]
    BrokerRefused(String),
    /// The connection to the broker was lost (messages it had not confirmed are published again).
    #[error("lost the broker: {0}")]
    BrokerLost(String),
    /// A defect in drover (a reply this build does not know, a task that panicked); report it.
    #[error("internal error: {0}")]
    Internal(String),
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// RabbitMQ failed or could not be reached.
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// Storage (S3 or HTTP) refused the request or failed for good.
    #[error("storage: {0}")]
    Storage(String),
    /// Storage could not be reached or answered with a server error; trying again may work.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// The status store cannot be reached now (no master found through the sentinels).
    #[error("the status store is unavailable: {0}")]
    StoreUnavailable(String),
    /// Local file or process I/O failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    /// An [`Error::Invalid`] built from anything printable.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// An [`Error::Io`] with the file or action it concerns.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { context: context.to_string(), source }
    }

    /// Whether trying again later may succeed (a service hiccup), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis(e) => {
                use redis::ServerErrorKind as Kind;
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            Kind::BusyLoading | Kind::ReadOnly | Kind::MasterDown | Kind::TryAgain | Kind::ClusterDown
                        )
                    )
                    // The same refusals raised inside a script come back as the script's error.
                    || {
                        let text = e.to_string();
                        ["READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN", "CLUSTERDOWN"].iter().any(|c| text.contains(c))
                    }
            }
            // The broker refusing a right, or naming something that does not exist, says so
            // again on every retry: it is for the operator to fix, not to wait out.
            Error::Amqp(e) => !broker_refusal(e),
            Error::BrokerLost(_) | Error::StorageUnavailable(_) | Error::StoreUnavailable(_) => true,
            _ => false,
        }
    }
}

/// Whether the broker refused a right (ACCESS_REFUSED, which names it) or named a queue or
/// exchange that does not exist (NOT_FOUND).
fn broker_refusal(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED | AMQPSoftError::NOTFOUND))
    )
}
