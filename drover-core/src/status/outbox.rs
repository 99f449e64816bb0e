//! Outboxes: the messages of tasks a transition made runnable, kept in Redis by the same script
//! until the caller has published them with confirms (`queue::Publisher::publish_outbox`).

use super::{JobKeys, StatusStore};
use crate::model::TaskMessage;
use crate::Result;

/// What one transition made runnable. Publishing it and then clearing it is the only way a task
/// reaches a queue; a crash in between leaves the outbox to be published again (a duplicate
/// message is harmless: a task starts once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    key: String,
    /// The job's set of outboxes not yet cleared.
    set: String,
    messages: Vec<TaskMessage>,
}

impl Outbox {
    /// The outbox stored under `key`, from the entries a script replied with. An entry that is
    /// not a task message (a defect) is logged and left out.
    pub(super) fn new(job: &JobKeys, key: String, entries: Vec<String>) -> Self {
        let messages = entries
            .into_iter()
            .filter_map(|e| {
                TaskMessage::parse(e.as_bytes())
                    .map_err(|err| tracing::error!(outbox = %key, entry = %e, error = %err, "bad outbox entry"))
                    .ok()
            })
            .collect();
        Outbox { key, set: job.part("outboxes"), messages }
    }

    /// The messages to publish.
    pub fn messages(&self) -> &[TaskMessage] {
        &self.messages
    }

    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl StatusStore {
    /// Forgets an outbox whose messages the broker has confirmed.
    pub async fn clear_outbox(&self, outbox: &Outbox) -> Result<()> {
        let _: () = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(&outbox.key)
            .ignore()
            .cmd("SREM")
            .arg(&outbox.set)
            .arg(&outbox.key)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }
}
