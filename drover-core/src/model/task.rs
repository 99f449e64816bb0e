//! Tasks: Azure's TaskAddParameter (what users submit) and CloudTask (what drover reports).

use super::{validate_env, validate_id, EnvironmentSetting, IsoDuration};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Component, Path};

/// Azure's AuthenticationTokenSettings: what the token a task gets may do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticationTokenSettings {
    #[serde(default)]
    pub access: Vec<AccessScope>,
}

/// What a task's token reaches: `job`, the operations on its own job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessScope {
    Job,
}

impl AuthenticationTokenSettings {
    /// Whether the token reaches the task's job.
    pub fn job(settings: &Option<Self>) -> bool {
        settings.as_ref().is_some_and(|s| s.access.contains(&AccessScope::Job))
    }
}

/// A task to add to a job (Azure's TaskAddParameter, the parts drover runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAddParameter {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<OutputFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_conditions: Option<ExitConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<TaskDependencies>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_package_references: Vec<ApplicationPackageReference>,
    /// Who it runs as (default: a non-admin auto-user of pool scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<super::UserIdentity>,
    /// Whether it gets a token for the Batch API (`access: ["job"]`: its job's operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_token_settings: Option<AuthenticationTokenSettings>,
    /// Accepted and kept, without effect (`fields::KINDS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_info: Option<serde_json::Value>,
}

/// A file to download into the task's working directory before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_container_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_storage_container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
}

/// Files to upload after the task ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputFile {
    pub file_pattern: String,
    pub destination: OutputFileDestination,
    #[serde(default)]
    pub upload_options: OutputFileUploadOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputFileDestination {
    pub container: OutputFileContainer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputFileContainer {
    pub container_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Accepted and kept, without effect (`fields::KINDS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_headers: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputFileUploadOptions {
    #[serde(default)]
    pub upload_condition: UploadCondition,
}

/// When an output file is uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UploadCondition {
    TaskSuccess,
    TaskFailure,
    #[default]
    TaskCompletion,
}

impl UploadCondition {
    /// Whether a task that ended with `success` uploads under this condition.
    pub fn applies(self, success: bool) -> bool {
        match self {
            UploadCondition::TaskSuccess => success,
            UploadCondition::TaskFailure => !success,
            UploadCondition::TaskCompletion => true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
}

/// How exit codes and staging failures map to job and dependency actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitConditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<ExitCodeMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_code_ranges: Vec<ExitCodeRangeMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_processing_error: Option<ExitOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_upload_error: Option<ExitOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ExitOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitCodeMapping {
    pub code: i32,
    pub exit_options: ExitOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitCodeRangeMapping {
    pub start: i32,
    pub end: i32,
    pub exit_options: ExitOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_action: Option<JobAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_action: Option<DependencyAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobAction {
    None,
    Disable,
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DependencyAction {
    Satisfy,
    Block,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDependencies {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_id_ranges: Vec<TaskIdRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskIdRange {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationPackageReference {
    pub application_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl TaskAddParameter {
    /// Checks every field drover can check without touching a service. The error names the task
    /// and the field at fault.
    pub fn validate(&self) -> Result<()> {
        validate_id("task id", &self.id)?;
        self.validate_fields().map_err(|e| Error::invalid(format!("task {:?}: {e}", self.id)))
    }

    fn validate_fields(&self) -> Result<(), String> {
        if self.command_line.trim().is_empty() {
            return Err("commandLine: must not be empty".into());
        }
        if self.command_line.len() > MAX_COMMAND_LINE {
            return Err(format!(
                "commandLine: {} bytes, more than {MAX_COMMAND_LINE} (put a long script in a resource file)",
                self.command_line.len()
            ));
        }
        let size = serde_json::to_vec(self).map_or(0, |json| json.len());
        if size > MAX_TASK_JSON {
            return Err(format!("{size} bytes of JSON, more than the {MAX_TASK_JSON} a task may hold"));
        }
        let words = shell_words::split(&self.command_line)
            .map_err(|e| format!("commandLine: cannot be split into words ({e})"))?;
        if words.is_empty() {
            return Err("commandLine: must not be empty".into());
        }
        for (i, rf) in self.resource_files.iter().enumerate() {
            rf.validate().map_err(|e| format!("resourceFiles[{i}].{e}"))?;
        }
        for (i, of) in self.output_files.iter().enumerate() {
            of.validate().map_err(|e| format!("outputFiles[{i}].{e}"))?;
        }
        validate_env("environmentSettings", &self.environment_settings).map_err(|e| e.to_string())?;
        if let Some(c) = &self.constraints {
            if matches!(c.max_task_retry_count, Some(n) if n < -1) {
                return Err("constraints.maxTaskRetryCount: must be -1 (unlimited) or more".into());
            }
        }
        if let Some(ec) = &self.exit_conditions {
            for (i, r) in ec.exit_code_ranges.iter().enumerate() {
                if r.start > r.end {
                    return Err(format!("exitConditions.exitCodeRanges[{i}]: start is after end"));
                }
            }
            if ec.options().any(|o| o.job_action == Some(JobAction::Disable)) {
                return Err("exitConditions: jobAction disable is not supported (use none or terminate)".into());
            }
        }
        if let Some(d) = &self.depends_on {
            for (i, id) in d.task_ids.iter().enumerate() {
                validate_id(&format!("dependsOn.taskIds[{i}]"), id).map_err(|e| e.to_string())?;
                if *id == self.id {
                    return Err(format!("dependsOn.taskIds[{i}]: a task cannot depend on itself"));
                }
            }
            for (i, r) in d.task_id_ranges.iter().enumerate() {
                if r.start > r.end || r.start < 0 {
                    return Err(format!("dependsOn.taskIdRanges[{i}]: start must be >= 0 and <= end"));
                }
            }
        }
        if let Some(identity) = &self.user_identity {
            identity.validate()?;
        }
        if self.required_slots == Some(0) {
            return Err("requiredSlots: must be at least 1".into());
        }
        for (i, p) in self.application_package_references.iter().enumerate() {
            validate_id(&format!("applicationPackageReferences[{i}].applicationId"), &p.application_id)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The argv the task runs: `commandLine` split into words, without a shell (as Azure does).
    pub fn argv(&self) -> Result<Vec<String>> {
        shell_words::split(&self.command_line)
            .map_err(|e| Error::invalid(format!("task {:?}: commandLine: {e}", self.id)))
    }

    /// Slots the task occupies on a node.
    pub fn slots(&self) -> u32 {
        self.required_slots.unwrap_or(1).max(1)
    }

    /// Whether the task needs files staged in before it runs.
    pub fn needs_staging(&self) -> bool {
        !self.resource_files.is_empty() || !self.application_package_references.is_empty()
    }
}

impl ExitConditions {
    fn options(&self) -> impl Iterator<Item = &ExitOptions> {
        self.exit_codes
            .iter()
            .map(|m| &m.exit_options)
            .chain(self.exit_code_ranges.iter().map(|m| &m.exit_options))
            .chain([&self.pre_processing_error, &self.file_upload_error, &self.default].into_iter().flatten())
    }

    /// The options that apply to how a task ended, in Azure's order: a staging failure's own
    /// options, else the first matching exit code, then range, then `default`.
    pub fn matching(&self, exit_code: Option<i32>, failure_code: Option<FailureCode>) -> Option<&ExitOptions> {
        let staging = match failure_code {
            Some(FailureCode::ResourceFileDownloadError | FailureCode::ApplicationPackageError) => {
                self.pre_processing_error.as_ref()
            }
            Some(FailureCode::FileUploadError) => self.file_upload_error.as_ref(),
            _ => None,
        };
        staging.or(exit_code.and_then(|c| self.by_exit_code(c))).or(self.default.as_ref())
    }

    /// The options of the first `exitCodes` entry, then `exitCodeRanges` entry, naming `code`.
    fn by_exit_code(&self, code: i32) -> Option<&ExitOptions> {
        self.exit_codes.iter().find(|m| m.code == code).map(|m| &m.exit_options).or_else(|| {
            self.exit_code_ranges.iter().find(|m| (m.start..=m.end).contains(&code)).map(|m| &m.exit_options)
        })
    }
}

/// The cycles in a dependency graph (task -> parents it waits for), each once, as id paths.
pub fn dependency_cycles(edges: &HashMap<String, Vec<String>>) -> Vec<Vec<String>> {
    // Iterative depth-first search with colours: 1 on the current path, 2 finished.
    let mut colour: HashMap<&str, u8> = HashMap::new();
    let mut found = Vec::new();
    let mut roots: Vec<&String> = edges.keys().collect();
    roots.sort();
    for root in roots {
        if colour.contains_key(root.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        colour.insert(root, 1);
        while let Some((node, next)) = path.last().copied() {
            let children = edges.get(node).map(Vec::as_slice).unwrap_or_default();
            if let Some(child) = children.get(next) {
                if let Some(last) = path.last_mut() {
                    last.1 += 1;
                }
                match colour.get(child.as_str()) {
                    None => {
                        colour.insert(child, 1);
                        path.push((child, 0));
                    }
                    Some(1) => {
                        let start = path.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<String> = path[start..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(child.clone());
                        found.push(cycle);
                    }
                    _ => {}
                }
            } else {
                colour.insert(node, 2);
                path.pop();
            }
        }
    }
    found
}

/// The longest `commandLine`, in bytes.
pub const MAX_COMMAND_LINE: usize = 32 * 1024;
/// The largest task, as JSON (Azure's limit on a request that adds tasks).
pub const MAX_TASK_JSON: usize = 1024 * 1024;

/// The most tasks one task may depend on (ids and expanded ranges together).
pub const MAX_PARENTS: usize = 100_000;

impl TaskAddParameter {
    /// The ids this task depends on: `dependsOn.taskIds` and every id in `taskIdRanges`, each once.
    pub fn parent_ids(&self) -> Result<Vec<String>> {
        let Some(d) = &self.depends_on else { return Ok(vec![]) };
        // Saturating: two ranges up to 2^63 must not wrap around to a small count.
        let span = d
            .task_id_ranges
            .iter()
            .fold(0i64, |n, r| n.saturating_add(r.end.saturating_sub(r.start).saturating_add(1)));
        if span.saturating_add(d.task_ids.len() as i64) > MAX_PARENTS as i64 {
            return Err(Error::invalid(format!(
                "task {:?}: dependsOn: more than {MAX_PARENTS} parent tasks (split the dependency, e.g. through intermediate tasks)",
                self.id
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let ranges = d.task_id_ranges.iter().flat_map(|r| (r.start..=r.end).map(|n| n.to_string()));
        Ok(d.task_ids.iter().cloned().chain(ranges).filter(|id| *id != self.id && seen.insert(id.clone())).collect())
    }

    /// Whether the way the task ended blocks its dependents (Azure: `satisfy` after exit code 0,
    /// `block` after a failure, unless the matching exit options set `dependencyAction`).
    pub fn blocks_dependents(&self, success: bool, exit_code: Option<i32>, failure_code: Option<FailureCode>) -> bool {
        let ec = self.exit_conditions.as_ref();
        let action = if success {
            ec.zip(exit_code)
                .and_then(|(ec, c)| ec.by_exit_code(c))
                .and_then(|o| o.dependency_action)
                .unwrap_or(DependencyAction::Satisfy)
        } else {
            ec.and_then(|ec| ec.matching(exit_code, failure_code))
                .and_then(|o| o.dependency_action)
                .unwrap_or(DependencyAction::Block)
        };
        action == DependencyAction::Block
    }

    /// The job action a failed task asks for (Azure: terminate unless its exit options say
    /// otherwise).
    pub fn job_action_on_failure(&self, exit_code: Option<i32>, failure_code: Option<FailureCode>) -> JobAction {
        self.exit_conditions
            .as_ref()
            .and_then(|ec| ec.matching(exit_code, failure_code))
            .and_then(|o| o.job_action)
            .unwrap_or(JobAction::Terminate)
    }
}

impl ResourceFile {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let sources =
            [self.http_url.is_some(), self.storage_container_url.is_some(), self.auto_storage_container_name.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(
                "httpUrl: exactly one of httpUrl, storageContainerUrl and autoStorageContainerName must be set".into(),
            );
        }
        if let Some(url) = &self.http_url {
            if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("s3://")) {
                let shown = crate::config::redact_url(url);
                return Err(format!("httpUrl {shown:?}: must be an http, https or s3:// URL"));
            }
            if url.starts_with("s3://") {
                super::S3Url::parse(url).map_err(|e| format!("httpUrl: {e}"))?;
            }
            if self.file_path.as_deref().is_none_or(str::is_empty) {
                return Err("filePath: required with httpUrl".into());
            }
        }
        if let Some(url) = &self.storage_container_url {
            super::Container::parse(url).map_err(|e| format!("storageContainerUrl: {e}"))?;
        }
        if let Some(name) = &self.auto_storage_container_name {
            if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
                return Err(format!("autoStorageContainerName {name:?}: not a valid container name"));
            }
        }
        if let Some(p) = &self.file_path {
            check_relative(p).map_err(|e| format!("filePath {p:?}: {e}"))?;
        }
        if let Some(mode) = &self.file_mode {
            match u32::from_str_radix(mode, 8) {
                Err(_) => return Err(format!("fileMode {mode:?}: must be an octal mode such as 0755")),
                Ok(m) if m > 0o777 => {
                    return Err(format!(
                    "fileMode {mode:?}: only permission bits (at most 0777) are allowed, not setuid, setgid or sticky"
                ))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The file mode to set after download, if any.
    pub fn mode(&self) -> Option<u32> {
        self.file_mode.as_deref().and_then(|m| u32::from_str_radix(m, 8).ok()).map(|m| m & 0o777)
    }
}

impl OutputFile {
    fn validate(&self) -> Result<(), String> {
        let pattern = &self.file_pattern;
        if pattern.is_empty() {
            return Err("filePattern: must not be empty".into());
        }
        // Azure allows "../std*.txt" to reach the task directory; nothing may go further up.
        let inner = pattern.strip_prefix("../").unwrap_or(pattern);
        check_relative(inner).map_err(|e| format!("filePattern {pattern:?}: {e}"))?;
        globset::Glob::new(inner).map_err(|e| format!("filePattern {pattern:?}: {e}"))?;
        super::Container::parse(&self.destination.container.container_url)
            .map_err(|e| format!("destination.container.containerUrl: {e}"))?;
        if let Some(path) = &self.destination.container.path {
            super::storage::check_key(path).map_err(|e| format!("destination.container.path {path:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Refuses a path that is absolute or climbs out of the directory it is relative to.
pub(crate) fn check_relative(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return Err("must be relative to the task working directory".into());
    }
    let mut depth = 0i32;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err("escapes the task working directory".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to the task working directory".into())
            }
        }
    }
    Ok(())
}

/// A task's state, as Azure names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskState {
    Active,
    Preparing,
    Running,
    Completed,
}

impl TaskState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Active => "active",
            TaskState::Preparing => "preparing",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
        }
    }

    /// Parses a state name, naming the field on failure.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(TaskState::Active),
            "preparing" => Ok(TaskState::Preparing),
            "running" => Ok(TaskState::Running),
            "completed" => Ok(TaskState::Completed),
            _ => Err(Error::invalid(format!("state {s:?}: must be one of active, preparing, running, completed"))),
        }
    }
}

/// A task as drover reports it (Azure's CloudTask).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudTask {
    #[serde(flatten)]
    pub spec: TaskAddParameter,
    pub state: TaskState,
    pub creation_time: String,
    pub state_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_info: Option<TaskExecutionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeInfo>,
}

impl CloudTask {
    /// Azure's TaskStatistics: its last attempt's wall clock time (to now while it runs), and the
    /// time it waited from its creation to that attempt's start.
    pub fn statistics(&self) -> super::job::Statistics {
        let ms = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(0, |t| t.timestamp_millis());
        let created = ms(&self.creation_time);
        let info = self.execution_info.as_ref();
        let start = info.and_then(|i| i.start_time.as_deref()).map(ms);
        let end = info.and_then(|i| i.end_time.as_deref()).map(ms).unwrap_or_else(super::now_ms);
        let last = ms(&self.state_transition_time);
        match start {
            Some(start) => super::job::Statistics::new(created, last, end - start, start - created),
            None => super::job::Statistics::new(created, last, 0, 0),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskExecutionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub retry_count: u32,
    pub requeue_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskResult {
    Success,
    Failure,
}

/// Why a task failed (Azure's TaskFailureInformation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    pub category: FailureCategory,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureCategory {
    UserError,
    ServerError,
}

impl FailureInfo {
    /// A failure the task's author can fix (bad command, missing input, ...).
    pub fn user(code: FailureCode, message: impl Into<String>) -> Self {
        FailureInfo { category: FailureCategory::UserError, code: code.as_str().into(), message: message.into() }
    }

    /// A failure of drover or the services it relies on.
    pub fn server(code: FailureCode, message: impl Into<String>) -> Self {
        FailureInfo { category: FailureCategory::ServerError, code: code.as_str().into(), message: message.into() }
    }

    /// The code, if it is one drover records.
    pub fn known_code(&self) -> Option<FailureCode> {
        FailureCode::ALL.into_iter().find(|c| c.as_str() == self.code)
    }
}

/// The failureInfo codes drover records (Azure's names where Azure has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// The command exited with a code other than 0.
    FailureExitCode,
    /// It ran past `maxWallClockTime` and was killed.
    MaxWallClockTimeExceeded,
    /// The program could not be started.
    CommandStartError,
    /// `commandLine` cannot be split into words.
    CommandLineInvalid,
    /// The task's directory could not be made.
    TaskDirectoryError,
    /// A resource file could not be downloaded (a pre-processing error).
    ResourceFileDownloadError,
    /// An application package could not be installed (a pre-processing error).
    ApplicationPackageError,
    /// An output file could not be uploaded.
    FileUploadError,
    /// The job's preparation task failed on the node (or could not be read).
    JobPreparationTaskFailed,
    /// The task was terminated (`drover task terminate`, or its job ended).
    TaskTerminated,
    /// The nodes running the task were lost too often (recorded by `start_task.lua`).
    NodeLostRepeatedly,
    /// Its record does not verify against the account's signing keys, or its stored spec is not
    /// valid: it was changed in the store, and it is not run.
    TaskRecordRefused,
}

impl FailureCode {
    /// Every code.
    pub const ALL: [FailureCode; 12] = [
        FailureCode::FailureExitCode,
        FailureCode::MaxWallClockTimeExceeded,
        FailureCode::CommandStartError,
        FailureCode::CommandLineInvalid,
        FailureCode::TaskDirectoryError,
        FailureCode::ResourceFileDownloadError,
        FailureCode::ApplicationPackageError,
        FailureCode::FileUploadError,
        FailureCode::JobPreparationTaskFailed,
        FailureCode::TaskTerminated,
        FailureCode::NodeLostRepeatedly,
        FailureCode::TaskRecordRefused,
    ];

    /// The code as Azure writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::FailureExitCode => "FailureExitCode",
            FailureCode::MaxWallClockTimeExceeded => "MaxWallClockTimeExceeded",
            FailureCode::CommandStartError => "CommandStartError",
            FailureCode::CommandLineInvalid => "CommandLineInvalid",
            FailureCode::TaskDirectoryError => "TaskDirectoryError",
            FailureCode::ResourceFileDownloadError => "ResourceFileDownloadError",
            FailureCode::ApplicationPackageError => "ApplicationPackageError",
            FailureCode::FileUploadError => "FileUploadError",
            FailureCode::JobPreparationTaskFailed => "JobPreparationTaskFailed",
            FailureCode::TaskTerminated => "TaskTerminated",
            FailureCode::NodeLostRepeatedly => "NodeLostRepeatedly",
            FailureCode::TaskRecordRefused => "TaskRecordRefused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub pool_id: String,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_root_directory: Option<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn finds_dependency_cycles() {
        let graph = |pairs: &[(&str, &[&str])]| -> std::collections::HashMap<String, Vec<String>> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|p| p.to_string()).collect())).collect()
        };
        let ring = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(dependency_cycles(&ring), vec![vec!["a", "b", "c", "a"]]);
        assert!(dependency_cycles(&graph(&[("a", &["b"]), ("b", &["c"])])).is_empty());
    }

    #[test]
    fn parents_expand_ranges_once() {
        let t: TaskAddParameter = serde_json::from_str(
            r#"{"id":"m","commandLine":"x","dependsOn":{"taskIds":["2","a"],"taskIdRanges":[{"start":1,"end":3}]}}"#,
        )
        .unwrap();
        assert_eq!(t.parent_ids().unwrap(), ["2", "a", "1", "3"]);
        let big: TaskAddParameter = serde_json::from_str(
            r#"{"id":"m","commandLine":"x","dependsOn":{"taskIdRanges":[{"start":0,"end":9999999}]}}"#,
        )
        .unwrap();
        assert!(big.parent_ids().unwrap_err().to_string().contains("dependsOn"));
        // Two ranges of 2^63 each: refused, not wrapped around to a small count.
        let huge: TaskAddParameter = serde_json::from_str(&format!(
            r#"{{"id":"m","commandLine":"x","dependsOn":{{"taskIdRanges":[{{"start":0,"end":{m}}},{{"start":0,"end":{m}}}]}}}}"#,
            m = i64::MAX
        ))
        .unwrap();
        assert!(huge.parent_ids().unwrap_err().to_string().contains("more than 100000 parent tasks"));
    }

    #[test]
    fn dependency_action_defaults_follow_azure() {
        let t: TaskAddParameter = serde_json::from_str(
            r#"{"id":"t","commandLine":"x","exitConditions":{"exitCodes":[{"code":3,"exitOptions":{"dependencyAction":"satisfy"}}]}}"#,
        )
        .unwrap();
        assert!(!t.blocks_dependents(true, Some(0), None));
        assert!(t.blocks_dependents(false, Some(1), Some(FailureCode::FailureExitCode)));
        assert!(!t.blocks_dependents(false, Some(3), Some(FailureCode::FailureExitCode)));
    }
    use super::*;

    fn parse(json: &str) -> Result<TaskAddParameter> {
        let t: TaskAddParameter = serde_json::from_str(json).map_err(Error::invalid)?;
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn accepts_an_azure_task() {
        let t = parse(
            r#"{"id":"t1","commandLine":"/bin/sh -c 'echo hi'","resourceFiles":[{"httpUrl":"s3://bkt/k","filePath":"in/k"}],
               "outputFiles":[{"filePattern":"../std*.txt","destination":{"container":{"containerUrl":"s3://bkt/out"}},
               "uploadOptions":{"uploadCondition":"taskFailure"}}],
               "constraints":{"maxWallClockTime":"PT1M","maxTaskRetryCount":2},
               "environmentSettings":[{"name":"A","value":"1"}]}"#,
        )
        .unwrap();
        assert_eq!(t.argv().unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(t.output_files[0].upload_options.upload_condition, UploadCondition::TaskFailure);
        assert!(t.needs_staging());
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"{"id":"t1"}"#, "commandLine"),
            (r#"{"id":"t1","commandLine":"x","multiInstanceSettings":{}}"#, "multiInstanceSettings"),
            (r#"{"id":"t1","commandLine":"x","userIdentity":{"userName":"u","autoUser":{}}}"#, "not both"),
            (r#"{"id":"t/1","commandLine":"x"}"#, "task id"),
            (
                r#"{"id":"t1","commandLine":"x","resourceFiles":[{"httpUrl":"s3://bkt/k","filePath":"../x"}]}"#,
                "resourceFiles[0].filePath",
            ),
            (
                r#"{"id":"t1","commandLine":"x","resourceFiles":[{"httpUrl":"s3://bkt/k","filePath":"/etc/x"}]}"#,
                "filePath",
            ),
            (r#"{"id":"t1","commandLine":"x","resourceFiles":[{"filePath":"a"}]}"#, "exactly one"),
            (
                r#"{"id":"t1","commandLine":"x","outputFiles":[{"filePattern":"../../x","destination":{"container":{"containerUrl":"s3://bkt"}}}]}"#,
                "filePattern",
            ),
            (r#"{"id":"t1","commandLine":"x","constraints":{"maxWallClockTime":"1h"}}"#, "ISO 8601"),
            (r#"{"id":"t1","commandLine":"echo 'unclosed"}"#, "commandLine"),
        ];
        for (json, want) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn refusals_hide_passwords_and_signatures() {
        for rf in [
            r#"{"httpUrl":"ftp://u:SECRET@h/f?sig=SECRET","filePath":"f"}"#,
            r#"{"storageContainerUrl":"https://a.blob.core.windows.net/c?sv=1&sig=SECRET"}"#,
        ] {
            let err = parse(&format!(r#"{{"id":"t1","commandLine":"x","resourceFiles":[{rf}]}}"#)).unwrap_err();
            let err = err.to_string();
            assert!(err.contains("sig=***") && !err.contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn golden_cloud_task_json() {
        let task = CloudTask {
            spec: TaskAddParameter {
                id: "t1".into(),
                display_name: None,
                command_line: "/bin/true".into(),
                resource_files: vec![],
                output_files: vec![],
                environment_settings: vec![],
                constraints: None,
                exit_conditions: None,
                depends_on: None,
                required_slots: None,
                application_package_references: vec![],
                user_identity: None,
                authentication_token_settings: None,
                affinity_info: None,
            },
            state: TaskState::Completed,
            creation_time: super::super::rfc3339(0),
            state_transition_time: super::super::rfc3339(1500),
            previous_state: Some(TaskState::Running),
            execution_info: Some(TaskExecutionInfo {
                start_time: Some(super::super::rfc3339(1000)),
                end_time: Some(super::super::rfc3339(1500)),
                exit_code: Some(0),
                result: Some(TaskResult::Success),
                ..Default::default()
            }),
            node_info: Some(NodeInfo { pool_id: "p".into(), node_id: "n".into(), task_root_directory: None }),
        };
        assert_eq!(
            serde_json::to_string(&task).unwrap(),
            r#"{"id":"t1","commandLine":"/bin/true","state":"completed","creationTime":"1970-01-01T00:00:00.000Z","stateTransitionTime":"1970-01-01T00:00:01.500Z","previousState":"running","executionInfo":{"startTime":"1970-01-01T00:00:01.000Z","endTime":"1970-01-01T00:00:01.500Z","exitCode":0,"retryCount":0,"requeueCount":0,"result":"success"},"nodeInfo":{"poolId":"p","nodeId":"n"}}"#
        );
    }
}
