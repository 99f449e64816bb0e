//! The wire types: Azure Batch's JSON for tasks, jobs and pools, and drover's task message.
//!
//! Nothing outside this module derives `Serialize` for what users or other programs read.

mod duration;
pub mod fields;
pub mod identity;
pub mod job;
pub mod lenient;
pub mod message;
pub mod node;
pub mod pool;
pub mod schedule;
mod storage;
pub mod task;

pub use duration::IsoDuration;
pub use identity::{RunAs, UserAccount, UserIdentity};
pub use job::{CloudJob, JobAddParameter, JobState};
pub use message::TaskMessage;
pub use pool::{CloudPool, NodeFillType, PoolAddParameter, TaskSchedulingPolicy};
pub(crate) use storage::percent_encode;
pub use storage::{BlobUrl, Container, S3Url};
pub use task::{CloudTask, TaskAddParameter, TaskState};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The longest id Azure Batch accepts for pools, jobs and tasks.
pub const MAX_ID_LEN: usize = 64;

/// Refuses an id that is empty, longer than 64 characters or outside `[A-Za-z0-9_-]`.
pub fn validate_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{field}: must not be empty")));
    }
    if id.chars().count() > MAX_ID_LEN {
        return Err(Error::invalid(format!("{field} {:?}: longer than {MAX_ID_LEN} characters", truncate(id, 80))));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(Error::invalid(format!(
            "{field} {:?}: character {c:?} is not allowed (only A-Z, a-z, 0-9, '_' and '-')",
            truncate(id, 80)
        )));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// An environment variable for a task (Azure's EnvironmentSetting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentSetting {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A name/value pair attached to a job or pool (Azure's MetadataItem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataItem {
    pub name: String,
    pub value: String,
}

pub(crate) fn validate_env(field: &str, env: &[EnvironmentSetting]) -> Result<()> {
    for (i, e) in env.iter().enumerate() {
        if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
            return Err(Error::invalid(format!("{field}[{i}].name {:?}: not a valid variable name", e.name)));
        }
        if e.value.contains('\0') {
            return Err(Error::invalid(format!("{field}[{i}].value: contains a NUL byte")));
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An RFC 3339 time (Azure's format) for milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks the command line and resource files of a start, job preparation or job release task.
pub(crate) fn check_command(
    field: &str,
    command_line: &str,
    resource_files: &[task::ResourceFile],
) -> std::result::Result<(), String> {
    match shell_words::split(command_line) {
        Ok(words) if !words.is_empty() => {}
        Ok(_) => return Err(format!("{field}.commandLine: must not be empty")),
        Err(e) => return Err(format!("{field}.commandLine: cannot be split into words ({e})")),
    }
    for (i, rf) in resource_files.iter().enumerate() {
        rf.validate().map_err(|e| format!("{field}.resourceFiles[{i}].{e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_id;

    #[test]
    fn ids_follow_azure_rules() {
        assert!(validate_id("id", "task-01_a").is_ok());
        assert!(validate_id("id", "").is_err());
        assert!(validate_id("id", &"a".repeat(65)).is_err());
        assert!(validate_id("id", &"a".repeat(64)).is_ok());
        let err = validate_id("task id", "a b").unwrap_err().to_string();
        assert!(err.contains("task id") && err.contains("' '"), "{err}");
        assert!(validate_id("id", "a.b").is_err());
        assert!(validate_id("id", "ä").is_err());
    }
}
