//! Talking to systemd when the worker runs as a `Type=notify` unit: READY, WATCHDOG and STOPPING
//! through sd_notify. Without `NOTIFY_SOCKET` every call does nothing.

use sd_notify::NotifyState;

/// The node has joined its pool and is ready (its start task, if any, has run).
pub(super) fn ready() {
    notify(&[NotifyState::Ready]);
}

/// The node is alive (called with each heartbeat that reached Redis).
pub(super) fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// The node is leaving: draining its tasks.
pub(super) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
