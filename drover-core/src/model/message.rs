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
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl TaskMessage {
    /// The message for `task_id` of `job_id`.
    pub fn new(job_id: &str, task_id: &str, stage: bool) -> Self {
        TaskMessage { v: MESSAGE_VERSION, job_id: job_id.into(), task_id: task_id.into(), stage, priority: 0 }
    }

    /// The same message for a job of `priority`.
    pub fn with_priority(self, priority: i32) -> Self {
        TaskMessage { priority, ..self }
    }

    /// The message an outbox entry (`<stage 0|1><task id>`, written by the status scripts) stands for.
    pub fn from_outbox(job_id: &str, entry: &str, priority: i32) -> Self {
        let (stage, task) = match entry.as_bytes().first() {
            Some(b'1') => (true, &entry[1..]),
            Some(b'0') => (false, &entry[1..]),
            _ => (false, entry),
        };
        TaskMessage::new(job_id, task, stage).with_priority(priority)
    }

    /// Parses and checks a message body; the error says why it is not a valid task message.
    pub fn parse(body: &[u8]) -> Result<Self> {
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
        let m = TaskMessage::from_outbox("j1", "0t2", -5);
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            r#"{"v":1,"jobId":"j1","taskId":"t2","stage":false,"priority":-5}"#
        );
    }

    #[test]
    fn rejects_what_is_not_a_task() {
        assert!(TaskMessage::parse(b"hello").is_err());
        assert!(TaskMessage::parse(br#"{"v":2,"jobId":"j","taskId":"t"}"#).is_err());
        assert!(TaskMessage::parse(br#"{"v":1,"jobId":"j/..","taskId":"t"}"#).is_err());
    }
}
