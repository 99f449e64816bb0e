//! Acks: a node's acknowledgements on one channel, coalesced into one `multiple` ack per unbroken
//! run of settled delivery tags (an ack frame per task cost the node a sixth of its rate).
//!
//! Every delivery is tracked from its arrival. Settling one marks it acked (its outcome is
//! recorded: a lost ack is only a redelivery that finds the task done) or handed back (`nack`,
//! requeue). One flusher per channel sends them all, in tag order: the run of settled tags at the
//! front of the channel's outstanding ones goes as one `multiple=true` ack to the run's last tag,
//! broken by a nack where a tag was handed back, so a `multiple` ack never covers a tag whose
//! nack is still to go. A tag acked behind one still in flight waits up to [`HOLD`] for the run
//! to reach it (short tasks end a little out of order), then is acked singly (so a long task
//! holds back no other ack, nor its prefetch slot, for longer than that); a nack goes at once.
//! The front run itself waits, up to [`HOLD`] too, until it is a batch long (the node's
//! lookahead: its prefetch beyond its slots), so that short tasks are acked a batch at a time
//! without starving the node of deliveries.
//! Every tag is settled exactly once, through here: a tag acked twice would close the channel.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long an ack waits to join a longer `multiple` ack: behind a delivery still in flight,
/// before it is sent on its own; at the front, before its run goes however short. On a quorum
/// queue every ack is a log entry: a single ack per task cost the broker about a fifth of its
/// CPU per task, and runs of whatever had ended (about 3.5 tasks each) a third more than runs
/// of 8.
const HOLD: Duration = Duration::from_millis(10);

/// The outstanding deliveries of one channel.
pub(crate) struct Acks {
    inner: Mutex<Inner>,
    wake: Notify,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How many settled tags the front run waits for (up to [`HOLD`]) before it goes.
    batch: usize,
}

#[derive(Default)]
struct Inner {
    /// Tag -> where its delivery stands.
    outstanding: BTreeMap<u64, Slot>,
    /// The channel is gone or the node stops consuming on it: the flusher ends.
    closed: bool,
}

/// Where a tracked delivery stands (`A`, its acker, is generic for the tests).
#[derive(Debug)]
enum Slot<A = Acker> {
    InFlight,
    /// Acked at that instant: sent with the next run, or on its own once [`HOLD`] has passed.
    Acked(A, Instant),
    /// Handed back: nacked with the next flush, in tag order.
    HandedBack(A),
}

/// One frame for the flusher to send, in order: an ack (`multiple` or not) or a nack.
#[derive(Debug, PartialEq)]
enum Settle<A = Acker> {
    Ack(A, bool),
    Nack(A),
}

/// A delivery with the channel's acks: settled through them.
pub(crate) struct Inbound {
    pub(crate) delivery: Delivery,
    acks: Arc<Acks>,
}

impl Acks {
    /// The acks of a new channel, with their flusher running, sent in runs of `batch` tags (or
    /// whatever has ended after [`HOLD`]).
    pub(crate) fn start(batch: usize) -> Arc<Acks> {
        let acks = Arc::new(Acks {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            flusher: Mutex::new(None),
            batch: batch.max(1),
        });
        let flusher = tokio::spawn(flush(acks.clone()));
        if let Ok(mut slot) = acks.flusher.lock() {
            *slot = Some(flusher);
        }
        acks
    }

    /// Tracks a delivery from its arrival; it is settled through the returned [`Inbound`].
    pub(crate) fn track(self: &Arc<Self>, delivery: Delivery) -> Inbound {
        if let Ok(mut inner) = self.inner.lock() {
            inner.outstanding.insert(delivery.delivery_tag, Slot::InFlight);
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

    /// What the flusher sends now (see [`plan`]), and whether the acks are closed.
    fn take(&self) -> Taken {
        let Ok(mut inner) = self.inner.lock() else { return Taken { closed: true, ..Taken::default() } };
        let closed = inner.closed;
        let (sends, next) = plan(&mut inner.outstanding, Instant::now(), closed, self.batch);
        Taken { sends, next, closed }
    }
}

/// What can be sent now, taken out of `outstanding`, in the order to send it: the front run of
/// settled tags (one `multiple` ack to its last acked tag, with a nack wherever a tag was handed
/// back) unless it is shorter than `batch` and younger than [`HOLD`] with no nack to send, then
/// behind the first tag in flight every nack and each ack that waited [`HOLD`] (all of them
/// once closed); with when the next held ack is due.
fn plan<A>(
    outstanding: &mut BTreeMap<u64, Slot<A>>,
    now: Instant,
    closed: bool,
    batch: usize,
) -> (Vec<Settle<A>>, Option<Instant>) {
    let mut sends = vec![];
    let mut run = None;
    // When each tag of the front run was acked.
    let front = || {
        outstanding.values().map_while(|slot| match slot {
            Slot::Acked(_, at) => Some(*at),
            _ => None,
        })
    };
    let held = !closed
        && front().count() < batch
        && front().min().is_some_and(|first| now < first + HOLD)
        && !outstanding.values().any(|slot| matches!(slot, Slot::HandedBack(_)));
    while let Some((tag, slot)) = if held { None } else { outstanding.pop_first() } {
        match slot {
            Slot::InFlight => {
                outstanding.insert(tag, slot);
                break;
            }
            Slot::Acked(acker, _) => run = Some(acker),
            Slot::HandedBack(acker) => {
                sends.extend(run.take().map(|last| Settle::Ack(last, true)));
                sends.push(Settle::Nack(acker));
            }
        }
    }
    sends.extend(run.map(|last| Settle::Ack(last, true)));
    let due: Vec<u64> = outstanding
        .iter()
        .filter(|(_, slot)| match slot {
            Slot::InFlight => false,
            Slot::Acked(_, at) => closed || now >= *at + HOLD,
            Slot::HandedBack(_) => true,
        })
        .map(|(tag, _)| *tag)
        .collect();
    for tag in due {
        match outstanding.remove(&tag) {
            Some(Slot::Acked(acker, _)) => sends.push(Settle::Ack(acker, false)),
            Some(Slot::HandedBack(acker)) => sends.push(Settle::Nack(acker)),
            _ => {}
        }
    }
    let next = outstanding
        .values()
        .filter_map(|slot| match slot {
            Slot::Acked(_, at) => Some(*at + HOLD),
            _ => None,
        })
        .min();
    (sends, next)
}

/// What the flusher sends now, and when it looks again.
#[derive(Default)]
struct Taken {
    sends: Vec<Settle>,
    next: Option<Instant>,
    closed: bool,
}

/// Sends what is settled whenever something is (and held acks when due), in tag order, until the
/// channel closes.
async fn flush(acks: Arc<Acks>) {
    let mut next = None;
    loop {
        match next {
            Some(due) => {
                tokio::select! {
                    () = acks.wake.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            None => acks.wake.notified().await,
        }
        // Let the attempts that are finishing now settle too: their acks join this run.
        tokio::task::yield_now().await;
        let taken = acks.take();
        for settle in taken.sends {
            match settle {
                Settle::Ack(acker, multiple) => ack(&acker, multiple).await,
                Settle::Nack(acker) => nack(&acker).await,
            }
        }
        if taken.closed {
            return;
        }
        next = taken.next;
    }
}

async fn ack(acker: &Acker, multiple: bool) {
    if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
        tracing::debug!(error = %e, "ack failed (the messages will come back and be recognised)");
    }
}

async fn nack(acker: &Acker) {
    if let Err(e) = acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
        tracing::debug!(error = %e, "nack failed (the message comes back with the channel)");
    }
}

impl Inbound {
    /// The message's body.
    pub(crate) fn data(&self) -> &[u8] {
        &self.delivery.data
    }

    /// Acks the delivery (its outcome is recorded), with the next run of acks.
    pub(crate) fn ack(&self) -> bool {
        let acker = self.delivery.acker.clone();
        if let Some(acker) = self.settle(Slot::Acked(acker, Instant::now())) {
            // Untracked, or the flusher has stopped: ack it on its own.
            tokio::spawn(async move { ack(&acker, false).await });
        }
        true
    }

    /// Hands the delivery back to its queue (for this or another node to take), with the next
    /// flush, in tag order.
    pub(crate) async fn requeue(&self) {
        if let Some(acker) = self.settle(Slot::HandedBack(self.delivery.acker.clone())) {
            nack(&acker).await;
        }
    }

    /// Marks the delivery settled for the flusher to send; hands the acker back when the flusher
    /// will not (the delivery is untracked, or the channel's acks are closed).
    fn settle(&self, how: Slot) -> Option<Acker> {
        let tag = self.delivery.delivery_tag;
        let tracked = match self.acks.inner.lock() {
            Ok(mut inner) if !inner.closed => match inner.outstanding.get_mut(&tag) {
                Some(slot @ Slot::InFlight) => {
                    *slot = how;
                    true
                }
                // Settled already: the first settlement stands (a second would close the channel).
                Some(_) => return None,
                None => false,
            },
            _ => false,
        };
        if tracked {
            self.acks.wake.notify_one();
            None
        } else {
            Some(self.delivery.acker.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outstanding(slots: Vec<(u64, Slot<u64>)>) -> BTreeMap<u64, Slot<u64>> {
        slots.into_iter().collect()
    }

    #[test]
    fn a_handed_back_tag_is_nacked_before_any_multiple_ack_reaches_past_it() {
        let now = Instant::now();
        let mut tags = outstanding(vec![
            (1, Slot::Acked(1, now)),
            (2, Slot::HandedBack(2)),
            (3, Slot::Acked(3, now)),
            (4, Slot::Acked(4, now)),
            (5, Slot::InFlight),
            (6, Slot::HandedBack(6)),
            (7, Slot::Acked(7, now)),
        ]);
        let (sends, next) = plan(&mut tags, now, false, 1);
        assert_eq!(
            sends,
            vec![Settle::Ack(1, true), Settle::Nack(2), Settle::Ack(4, true), Settle::Nack(6)],
            "in tag order, the runs broken at the nack, the nack behind the tag in flight at once"
        );
        assert_eq!(next, Some(now + HOLD), "the ack behind the tag in flight is held");
        assert_eq!(tags.keys().copied().collect::<Vec<_>>(), vec![5, 7]);
    }

    #[test]
    fn an_ack_behind_a_tag_in_flight_goes_singly_once_held_or_closed() {
        let then = Instant::now();
        let mut tags = outstanding(vec![(1, Slot::InFlight), (2, Slot::Acked(2, then))]);
        let (sends, _) = plan(&mut tags, then + HOLD, false, 1);
        assert_eq!(sends, vec![Settle::Ack(2, false)], "due after the hold");
        let mut tags = outstanding(vec![(1, Slot::InFlight), (2, Slot::Acked(2, then))]);
        let (sends, next) = plan(&mut tags, then, true, 1);
        assert_eq!((sends, next), (vec![Settle::Ack(2, false)], None), "all of them once closed");
        let (sends, _) = plan(&mut outstanding(vec![(1, Slot::InFlight)]), then, true, 1);
        assert!(sends.is_empty(), "a tag in flight is never acked");
    }

    #[test]
    fn a_front_run_shorter_than_a_batch_waits_until_held_or_a_nack_is_due() {
        let then = Instant::now();
        let short = || outstanding(vec![(1, Slot::Acked(1, then)), (2, Slot::Acked(2, then)), (3, Slot::InFlight)]);
        let (sends, next) = plan(&mut short(), then, false, 3);
        assert_eq!((sends, next), (vec![], Some(then + HOLD)), "2 of a batch of 3: held");
        let (sends, _) = plan(&mut short(), then + HOLD, false, 3);
        assert_eq!(sends, vec![Settle::Ack(2, true)], "due after the hold");
        let (sends, _) = plan(&mut short(), then, true, 3);
        assert_eq!(sends, vec![Settle::Ack(2, true)], "sent at once when closed");
        let mut full =
            outstanding(vec![(1, Slot::Acked(1, then)), (2, Slot::Acked(2, then)), (3, Slot::Acked(3, then))]);
        let (sends, next) = plan(&mut full, then, false, 3);
        assert_eq!((sends, next), (vec![Settle::Ack(3, true)], None), "a whole batch goes at once");
        let mut nack = outstanding(vec![(1, Slot::Acked(1, then)), (2, Slot::InFlight), (3, Slot::HandedBack(3))]);
        let (sends, _) = plan(&mut nack, then, false, 3);
        assert_eq!(sends, vec![Settle::Ack(1, true), Settle::Nack(3)], "a nack is not held, nor the run before it");
    }
}
