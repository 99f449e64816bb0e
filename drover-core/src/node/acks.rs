//! Acks: a node's acknowledgements on one channel, coalesced into one `multiple` ack per unbroken
//! run of settled delivery tags (an ack frame per task cost the node a sixth of its rate).
//!
//! Every delivery is tracked from its arrival. Settling one marks it acked (its outcome is
//! recorded: a lost ack is only a redelivery that finds the task done) or hands it back at once
//! (`nack`, requeue). A flusher then acks the run of acked tags at the front of the channel's
//! outstanding ones with one `multiple=true` ack to the run's last tag, and acks singly those
//! behind a tag still in flight (so a long task holds back no other ack, and no prefetch slot).
//! Every tag is settled exactly once, through here: a tag acked twice would close the channel.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The outstanding deliveries of one channel.
pub(crate) struct Acks {
    inner: Mutex<Inner>,
    wake: Notify,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Inner {
    /// Tag -> None while in flight, the acker once acked.
    outstanding: BTreeMap<u64, Option<Acker>>,
    /// The channel is gone or the node stops consuming on it: the flusher ends.
    closed: bool,
}

/// A delivery with the channel's acks: settled through them.
pub(crate) struct Inbound {
    pub(crate) delivery: Delivery,
    acks: Arc<Acks>,
}

impl Acks {
    /// The acks of a new channel, with their flusher running.
    pub(crate) fn start() -> Arc<Acks> {
        let acks =
            Arc::new(Acks { inner: Mutex::new(Inner::default()), wake: Notify::new(), flusher: Mutex::new(None) });
        let flusher = tokio::spawn(flush(acks.clone()));
        if let Ok(mut slot) = acks.flusher.lock() {
            *slot = Some(flusher);
        }
        acks
    }

    /// Tracks a delivery from its arrival; it is settled through the returned [`Inbound`].
    pub(crate) fn track(self: &Arc<Self>, delivery: Delivery) -> Inbound {
        if let Ok(mut inner) = self.inner.lock() {
            inner.outstanding.insert(delivery.delivery_tag, None);
        }
        Inbound { delivery, acks: self.clone() }
    }

    /// Stops the flusher once it has sent what is settled (the channel is going).
    pub(crate) fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
        }
        self.wake.notify_one();
    }

    /// Closes, and waits until what was settled has been sent (before the channel closes).
    pub(crate) async fn finish(&self) {
        self.close();
        let flusher = self.flusher.lock().ok().and_then(|mut f| f.take());
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
    }

    /// What can be acked now: the acker of the last tag of the front run of acked tags (one
    /// `multiple` ack), and the acked tags behind one in flight (single acks).
    fn take(&self) -> (Option<Acker>, Vec<Acker>, bool) {
        let Ok(mut inner) = self.inner.lock() else { return (None, vec![], true) };
        let mut run = None;
        while let Some(entry) = inner.outstanding.first_entry() {
            if entry.get().is_none() {
                break;
            }
            run = entry.remove();
        }
        let behind: Vec<u64> = inner.outstanding.iter().filter(|(_, a)| a.is_some()).map(|(t, _)| *t).collect();
        let singles = behind.iter().filter_map(|t| inner.outstanding.remove(t).flatten()).collect();
        (run, singles, inner.closed)
    }
}

/// Sends what is settled whenever something is, until the channel closes.
async fn flush(acks: Arc<Acks>) {
    loop {
        acks.wake.notified().await;
        // Let the attempts that are finishing now settle too: their acks join this run.
        tokio::task::yield_now().await;
        let (run, singles, closed) = acks.take();
        if let Some(last) = run {
            send(&last, true).await;
        }
        for acker in singles {
            send(&acker, false).await;
        }
        if closed {
            return;
        }
    }
}

async fn send(acker: &Acker, multiple: bool) {
    if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
        tracing::debug!(error = %e, "ack failed (the messages will come back and be recognised)");
    }
}

impl Inbound {
    /// The message's body.
    pub(crate) fn data(&self) -> &[u8] {
        &self.delivery.data
    }

    /// Acks the delivery (its outcome is recorded), with the next run of acks.
    pub(crate) fn ack(&self) -> bool {
        let tag = self.delivery.delivery_tag;
        let queued = match self.acks.inner.lock() {
            Ok(mut inner) if !inner.closed => match inner.outstanding.get_mut(&tag) {
                Some(slot) => {
                    *slot = Some(self.delivery.acker.clone());
                    true
                }
                None => false,
            },
            _ => false,
        };
        if queued {
            self.acks.wake.notify_one();
        } else {
            // Untracked, or the flusher has stopped: ack it on its own.
            let acker = self.delivery.acker.clone();
            tokio::spawn(async move { send(&acker, false).await });
        }
        true
    }

    /// Hands the delivery back to its queue now (for this or another node to take).
    pub(crate) async fn requeue(&self) {
        if let Ok(mut inner) = self.acks.inner.lock() {
            inner.outstanding.remove(&self.delivery.delivery_tag);
        }
        // The tag no longer holds back the run behind it.
        self.acks.wake.notify_one();
        let options = BasicNackOptions { requeue: true, multiple: false };
        if let Err(e) = self.delivery.acker.nack(options).await {
            tracing::debug!(error = %e, "nack failed (the message comes back with the channel)");
        }
    }
}

/// Closes the acks of a channel when the consume loop that owns it ends, however it ends.
pub(crate) struct Closing(pub(crate) Arc<Acks>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}
