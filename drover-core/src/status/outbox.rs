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
    /// The job's outboxes not yet cleared (a sorted set: since when).
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
            .cmd("ZREM")
            .arg(&outbox.set)
            .arg(&outbox.key)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The outboxes of `job` written more than `age` ago and not cleared since: their writer
    /// died before it published them (a killed submitter, a lost node). Publishing one again is
    /// harmless; a task starts once.
    pub async fn stale_outboxes(&self, job: &str, age: std::time::Duration) -> Result<Vec<Outbox>> {
        let keys = self.keys.job(job);
        let before = crate::model::now_ms() - age.as_millis() as i64;
        let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.part("outboxes"))
            .arg("-inf")
            .arg(before)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.con())
            .await?;
        let mut outboxes = Vec::with_capacity(stale.len());
        for key in stale {
            let entries: Vec<String> =
                redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(&mut self.con()).await?;
            outboxes.push(Outbox::new(&keys, key, entries));
        }
        Ok(outboxes)
    }
}
