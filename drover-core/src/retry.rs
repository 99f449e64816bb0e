//! The one retry policy: exponential backoff (backon) on the errors [`Error::is_transient`] calls
//! transient; anything else is returned at once.

use crate::{Error, Result};
use backon::{ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// How long to keep trying.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// Until it works (a status write whose message stays unacked meanwhile; a broker to reconnect to).
    Forever,
    /// Until this much time has been spent waiting.
    For(Duration),
}

/// Runs `op` until it succeeds, fails for good, or `patience` runs out, waiting 100 ms, 200 ms,
/// ... up to 5 s between tries; each transient failure is logged with `what`. `give_up` is
/// checked before each retry (a node handing its work back stops waiting).
pub async fn transient<T, F, Fut>(what: &str, patience: Patience, give_up: impl Fn() -> bool, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_jitter();
    let policy = match patience {
        Patience::Forever => policy,
        Patience::For(total) => policy.with_total_delay(Some(total)),
    };
    op.retry(policy)
        .sleep(tokio::time::sleep)
        .when(|e: &Error| e.is_transient() && !give_up())
        .notify(|e, delay| tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying"))
        .await
}
