//! The task message: what travels on a pool's queue. It names a task; the task itself lives in Redis.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The schema version this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// One message per task (and per retry) on the pool queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskMessage {
    /// Schema version ([`MESSAGE_VERSION`]).
    pub v: u32,
    pub job_id: String,
    pub task_id: String,
    /// Whether the task has files to stage in (its first state is then `preparing`).
    #[serde(default)]
    pub stage: bool,
    /// The job's priority (-1000..1000): it picks the pool's priority band and, on a node, which
    /// of the held messages starts first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The task's `requiredSlots`: a node starts it only when that many of its slots are free.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub slots: u32,
    /// The signature over the job, task, slots and stage, when the account signs its tasks
    /// ([`crate::signing`]). The priority is not signed: a job's priority changes, and it only
    /// orders the messages a node holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn one() -> u32 {
    1
}

/// The largest body a worker reads as a task message (one holds two ids and a few numbers).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

impl TaskMessage {
    /// The message for `task_id` of `job_id`.
    pub fn new(job_id: &str, task_id: &str, stage: bool) -> Self {
        TaskMessage {
            v: MESSAGE_VERSION,
            job_id: job_id.into(),
            task_id: task_id.into(),
            stage,
            priority: 0,
            slots: 1,
            sig: None,
        }
    }

    /// What its signature covers.
    pub fn signed_fields(job_id: &str, task_id: &str, slots: u32, stage: bool) -> [String; 4] {
        [job_id.to_string(), task_id.to_string(), slots.to_string(), u8::from(stage).to_string()]
    }

    /// Checks the message's signature against the account's keys, if it has them.
    pub fn verify(&self, signer: Option<&crate::signing::Signer>) -> std::result::Result<(), String> {
        let Some(signer) = signer else { return Ok(()) };
        let fields = TaskMessage::signed_fields(&self.job_id, &self.task_id, self.slots, self.stage);
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        signer.verify(crate::signing::Kind::Message, &fields, self.sig.as_deref())
    }

    /// The message for `task` of `job_id`.
    pub fn for_task(job_id: &str, task: &super::TaskAddParameter) -> Self {
        TaskMessage { slots: task.slots(), ..TaskMessage::new(job_id, &task.id, task.needs_staging()) }
    }

    /// The same message for a job of `priority`.
    pub fn with_priority(self, priority: i32) -> Self {
        TaskMessage { priority, ..self }
    }

    /// The message an outbox entry stands for: the message the status scripts kept for a held
    /// task, now sent with its job's priority.
    pub fn from_outbox(entry: &str, priority: i32) -> Result<Self> {
        Ok(TaskMessage::parse(entry.as_bytes())?.with_priority(priority))
    }

    /// Parses and checks a message body; the error says why it is not a valid task message.
    pub fn parse(body: &[u8]) -> Result<Self> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(Error::invalid(format!(
                "not a task message: {} bytes, more than the {MAX_MESSAGE_BYTES} a task message can take",
                body.len()
            )));
        }
        let msg: TaskMessage =
            serde_json::from_slice(body).map_err(|e| Error::invalid(format!("not a task message: {e}")))?;
        if msg.v != MESSAGE_VERSION {
            return Err(Error::invalid(format!(
                "task message version {} is not supported (this build reads {MESSAGE_VERSION})",
                msg.v
            )));
        }
        super::validate_id("jobId", &msg.job_id)?;
        super::validate_id("taskId", &msg.task_id)?;
        Ok(msg)
    }

    /// The message body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_message() {
        let m = TaskMessage::new("j1", "t1", true);
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), r#"{"v":1,"jobId":"j1","taskId":"t1","stage":true}"#);
        assert_eq!(TaskMessage::parse(&m.to_bytes()).unwrap(), m);
        let kept = TaskMessage { slots: 2, ..TaskMessage::new("j1", "t2", false) };
        let m = TaskMessage::from_outbox(&String::from_utf8(kept.to_bytes()).unwrap(), -5).unwrap();
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            r#"{"v":1,"jobId":"j1","taskId":"t2","stage":false,"priority":-5,"slots":2}"#
        );
    }

    #[test]
    fn rejects_what_is_not_a_task() {
        assert!(TaskMessage::parse(b"hello").is_err());
        let padded = format!(r#"{{"v":1,"jobId":"j","taskId":"t","pad":"{}"}}"#, " ".repeat(MAX_MESSAGE_BYTES));
        assert!(TaskMessage::parse(padded.as_bytes()).unwrap_err().to_string().contains("bytes, more than"));
        assert!(TaskMessage::parse(br#"{"v":2,"jobId":"j","taskId":"t"}"#).is_err());
        assert!(TaskMessage::parse(br#"{"v":1,"jobId":"j/..","taskId":"t"}"#).is_err());
    }
}
