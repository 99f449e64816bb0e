//! Azure Batch's fields, each with what drover does with it: supported; accepted and kept (it
//! describes cloud VM provisioning that means nothing on owned nodes: stored, shown back, and a
//! warning says it has no effect); or refused, saying what to do instead. A document is checked
//! against this table before it is read, so every problem is reported at once, each with the
//! line and column of the field. The README's field table is [`markdown`]'s output.

use serde_json::Value;

/// What drover does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Supported,
    /// Supported: an object of the named kind.
    Object(&'static str),
    /// Supported: a list of objects of the named kind.
    List(&'static str),
    /// Accepted and kept; why it has no effect.
    Kept(&'static str),
    /// Refused; what to do instead.
    Refused(&'static str),
}

use Policy::{Kept, List, Object, Refused, Supported};

const CONTAINERS: &str = "drover runs commands on the node itself: run the container in the command line \
                          (`docker run ...`)";
const IDENTITIES: &str = "managed identities are Azure's: use a URL that carries its own access (s3://, or an \
                          https URL with a SAS) instead";

/// Every object kind drover reads, with its fields (Azure's names).
pub const KINDS: &[(&str, &[(&str, Policy)])] = &[
    (
        "PoolAddParameter",
        &[
            ("id", Supported),
            ("displayName", Supported),
            ("vmSize", Kept("nodes are whatever machines run drover-worker")),
            ("taskSlotsPerNode", Supported),
            ("maxTasksPerNode", Supported),
            ("startTask", Object("StartTask")),
            ("targetDedicatedNodes", Supported),
            ("enableAutoScale", Supported),
            ("autoScaleFormula", Supported),
            ("autoScaleEvaluationInterval", Supported),
            ("metadata", Supported),
            ("userAccounts", Supported),
            ("virtualMachineConfiguration", Kept("a cloud VM image: nodes run the worker's own OS")),
            ("cloudServiceConfiguration", Kept("a cloud service image: nodes run the worker's own OS")),
            ("resizeTimeout", Kept("workers start in seconds; the autoscaler retries")),
            ("resourceTags", Kept("tags of Azure resources")),
            ("targetLowPriorityNodes", Kept("no spot capacity: count them in targetDedicatedNodes")),
            ("targetSpotNodes", Kept("no spot capacity: count them in targetDedicatedNodes")),
            ("enableInterNodeCommunication", Kept("nodes reach each other as their network allows")),
            ("networkConfiguration", Kept("the nodes' network is the operator's")),
            ("taskSchedulingPolicy", Object("TaskSchedulingPolicy")),
            ("targetNodeCommunicationMode", Kept("nodes talk to RabbitMQ and Redis")),
            ("upgradePolicy", Kept("nodes are upgraded by their operator")),
            ("applicationLicenses", Kept("no Azure-provided licensed software")),
            ("certificateReferences", Refused("install certificates with the pool's startTask")),
            ("mountConfiguration", Refused("mount file systems in the pool's startTask or on the nodes")),
            (
                "applicationPackageReferences",
                Refused("name the packages in the startTask's or the tasks' applicationPackageReferences"),
            ),
        ],
    ),
    (
        "StartTask",
        &[
            ("commandLine", Supported),
            ("resourceFiles", List("ResourceFile")),
            ("environmentSettings", Supported),
            ("maxTaskRetryCount", Supported),
            ("waitForSuccess", Supported),
            ("applicationPackageReferences", Supported),
            ("userIdentity", Object("UserIdentity")),
            ("containerSettings", Refused(CONTAINERS)),
        ],
    ),
    (
        "JobAddParameter",
        &[
            ("id", Supported),
            ("displayName", Supported),
            ("poolInfo", Object("PoolInformation")),
            ("priority", Supported),
            ("maxParallelTasks", Supported),
            ("constraints", Supported),
            ("jobPreparationTask", Object("JobPreparationTask")),
            ("jobReleaseTask", Object("JobReleaseTask")),
            ("commonEnvironmentSettings", Supported),
            ("onAllTasksComplete", Supported),
            ("onTaskFailure", Supported),
            ("usesTaskDependencies", Supported),
            ("metadata", Supported),
            ("allowTaskPreemption", Kept("drover preempts no task")),
            ("networkConfiguration", Kept("the nodes' network is the operator's")),
            ("jobManagerTask", Object("JobManagerTask")),
        ],
    ),
    (
        "JobScheduleAddParameter",
        &[
            ("id", Supported),
            ("displayName", Supported),
            ("schedule", Supported),
            ("jobSpecification", Object("JobAddParameter")),
            ("metadata", Supported),
        ],
    ),
    (
        "JobManagerTask",
        &[
            ("id", Supported),
            ("displayName", Supported),
            ("commandLine", Supported),
            ("resourceFiles", List("ResourceFile")),
            ("outputFiles", List("OutputFile")),
            ("environmentSettings", Supported),
            ("constraints", Supported),
            ("requiredSlots", Supported),
            ("killJobOnCompletion", Supported),
            ("userIdentity", Object("UserIdentity")),
            ("runExclusive", Supported),
            ("applicationPackageReferences", Supported),
            ("allowLowPriorityNode", Kept("no spot capacity")),
            ("containerSettings", Refused(CONTAINERS)),
            ("authenticationTokenSettings", Object("AuthenticationTokenSettings")),
        ],
    ),
    ("TaskSchedulingPolicy", &[("nodeFillType", Supported)]),
    ("AuthenticationTokenSettings", &[("access", Supported)]),
    ("PoolInformation", &[("poolId", Supported), ("autoPoolSpecification", Object("AutoPoolSpecification"))]),
    (
        "AutoPoolSpecification",
        &[
            ("autoPoolIdPrefix", Supported),
            ("poolLifetimeOption", Supported),
            ("keepAlive", Supported),
            ("pool", Object("PoolAddParameter")),
        ],
    ),
    (
        "JobPreparationTask",
        &[
            ("id", Supported),
            ("commandLine", Supported),
            ("resourceFiles", List("ResourceFile")),
            ("environmentSettings", Supported),
            ("constraints", Supported),
            ("waitForSuccess", Supported),
            ("rerunOnNodeRebootAfterSuccess", Supported),
            ("userIdentity", Object("UserIdentity")),
            ("containerSettings", Refused(CONTAINERS)),
        ],
    ),
    (
        "JobReleaseTask",
        &[
            ("id", Supported),
            ("commandLine", Supported),
            ("resourceFiles", List("ResourceFile")),
            ("environmentSettings", Supported),
            ("maxWallClockTime", Supported),
            ("retentionTime", Supported),
            ("userIdentity", Object("UserIdentity")),
            ("containerSettings", Refused(CONTAINERS)),
        ],
    ),
    (
        "TaskAddParameter",
        &[
            ("id", Supported),
            ("displayName", Supported),
            ("commandLine", Supported),
            ("resourceFiles", List("ResourceFile")),
            ("outputFiles", List("OutputFile")),
            ("environmentSettings", Supported),
            ("constraints", Supported),
            ("exitConditions", Supported),
            ("dependsOn", Supported),
            ("requiredSlots", Supported),
            ("applicationPackageReferences", Supported),
            ("userIdentity", Object("UserIdentity")),
            ("affinityInfo", Kept("a task runs on whichever node of its pool takes it")),
            ("containerSettings", Refused(CONTAINERS)),
            ("multiInstanceSettings", Refused("no multi-node (MPI) tasks: run one task per node")),
            ("authenticationTokenSettings", Object("AuthenticationTokenSettings")),
        ],
    ),
    (
        "ResourceFile",
        &[
            ("httpUrl", Supported),
            ("storageContainerUrl", Supported),
            ("autoStorageContainerName", Supported),
            ("filePath", Supported),
            ("blobPrefix", Supported),
            ("fileMode", Supported),
            ("identityReference", Refused(IDENTITIES)),
        ],
    ),
    (
        "OutputFile",
        &[("filePattern", Supported), ("destination", Object("OutputFileDestination")), ("uploadOptions", Supported)],
    ),
    ("OutputFileDestination", &[("container", Object("OutputFileBlobContainerDestination"))]),
    (
        "OutputFileBlobContainerDestination",
        &[
            ("containerUrl", Supported),
            ("path", Supported),
            ("uploadHeaders", Kept("objects are stored with their content only")),
            ("identityReference", Refused(IDENTITIES)),
        ],
    ),
    ("UserIdentity", &[("userName", Supported), ("autoUser", Supported)]),
];

/// The fields of `kind`.
fn fields(kind: &str) -> &'static [(&'static str, Policy)] {
    KINDS.iter().find(|(k, _)| *k == kind).map_or(&[], |(_, f)| f)
}

/// A field a document should not have: where it is (its path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub message: String,
}

/// What checking a document found: problems refuse it; kept fields are only noted.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Finding>,
    pub kept: Vec<Finding>,
}

/// Checks `value`, an object of `kind`, against the table.
pub fn check(kind: &str, value: &Value) -> Report {
    let mut report = Report::default();
    walk(kind, value, "", &mut report);
    report
}

fn walk(kind: &str, value: &Value, path: &str, report: &mut Report) {
    let Value::Object(members) = value else { return };
    let table = fields(kind);
    for (name, member) in members {
        let here = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        match table.iter().find(|(f, _)| f == name).map(|(_, p)| *p) {
            None if member.is_null() => {}
            None => {
                let message = format!("unknown field `{name}`: {kind} has no such field in Azure Batch or drover");
                report.problems.push(Finding { path: here, message });
            }
            Some(Supported) => {}
            Some(Object(inner)) => walk(inner, member, &here, report),
            Some(List(inner)) => {
                for (i, item) in member.as_array().into_iter().flatten().enumerate() {
                    walk(inner, item, &format!("{here}[{i}]"), report);
                }
            }
            Some(Kept(why)) if !member.is_null() => {
                report.kept.push(Finding { path: here, message: format!("has no effect on drover ({why}); kept") })
            }
            Some(Kept(_)) => {}
            Some(Refused(instead)) if !member.is_null() => {
                let message = format!("an Azure Batch feature drover does not provide: {instead}");
                report.problems.push(Finding { path: here, message });
            }
            Some(Refused(_)) => {}
        }
    }
}

/// The README's field table: per object, its supported fields in one row, then a row for each
/// field kept or refused.
pub fn markdown() -> String {
    let mut out = String::from("| object | field | in drover |\n|---|---|---|\n");
    for (kind, fields) in KINDS {
        let supported: Vec<String> = fields
            .iter()
            .filter(|(_, p)| matches!(p, Supported | Object(_) | List(_)))
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if !supported.is_empty() {
            out.push_str(&format!("| {kind} | {} | supported |\n", supported.join(", ")));
        }
        for (name, policy) in fields.iter() {
            match policy {
                Kept(why) => out.push_str(&format!("| {kind} | `{name}` | accepted and kept, no effect: {why} |\n")),
                Refused(instead) => out.push_str(&format!("| {kind} | `{name}` | refused: {instead} |\n")),
                Supported | Object(_) | List(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{lenient, JobAddParameter, PoolAddParameter, TaskAddParameter};
    use serde_json::json;

    /// What reading a document with `field` (set to `{}`) in an object of `kind` says, if it
    /// fails.
    fn read_with(kind: &str, field: &str) -> Option<String> {
        let probe = json!({ field: {} });
        let (root, doc) = match kind {
            "PoolAddParameter" => ("pool", json!({"id": "x"})),
            "StartTask" => ("pool", json!({"id": "x", "startTask": {"commandLine": "x"}})),
            "TaskSchedulingPolicy" => ("pool", json!({"id": "x", "taskSchedulingPolicy": {}})),
            "AuthenticationTokenSettings" => {
                ("task", json!({"id": "x", "commandLine": "x", "authenticationTokenSettings": {}}))
            }
            "JobAddParameter" => ("job", json!({"id": "x", "poolInfo": {"poolId": "p"}})),
            "PoolInformation" | "AutoPoolSpecification" => ("job", json!({"id": "x", "poolInfo": {"poolId": "p"}})),
            "JobPreparationTask" => {
                ("job", json!({"id": "x", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "x"}}))
            }
            "JobReleaseTask" => {
                ("job", json!({"id": "x", "poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "x"}}))
            }
            "JobManagerTask" => (
                "job",
                json!({"id": "x", "poolInfo": {"poolId": "p"}, "jobManagerTask": {"id": "m", "commandLine": "x"}}),
            ),
            "JobScheduleAddParameter" => {
                ("schedule", json!({"id": "x", "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}))
            }
            _ => ("task", json!({"id": "x", "commandLine": "x"})),
        };
        let mut doc = doc;
        let target = match kind {
            "PoolAddParameter" | "JobAddParameter" | "TaskAddParameter" | "JobScheduleAddParameter" => &mut doc,
            "StartTask" => &mut doc["startTask"],
            "TaskSchedulingPolicy" => &mut doc["taskSchedulingPolicy"],
            "AuthenticationTokenSettings" => &mut doc["authenticationTokenSettings"],
            "PoolInformation" => &mut doc["poolInfo"],
            "AutoPoolSpecification" => {
                doc["poolInfo"] = json!({"autoPoolSpecification": {"poolLifetimeOption": "job"}});
                &mut doc["poolInfo"]["autoPoolSpecification"]
            }
            "JobPreparationTask" => &mut doc["jobPreparationTask"],
            "JobReleaseTask" => &mut doc["jobReleaseTask"],
            "JobManagerTask" => &mut doc["jobManagerTask"],
            "ResourceFile" => {
                doc["resourceFiles"] = json!([{}]);
                &mut doc["resourceFiles"][0]
            }
            "UserIdentity" => {
                doc["userIdentity"] = json!({});
                &mut doc["userIdentity"]
            }
            _ => {
                doc["outputFiles"] = json!([{"filePattern": "o", "destination": {"container": {}}}]);
                match kind {
                    "OutputFile" => &mut doc["outputFiles"][0],
                    "OutputFileDestination" => &mut doc["outputFiles"][0]["destination"],
                    _ => &mut doc["outputFiles"][0]["destination"]["container"],
                }
            }
        };
        if let (Value::Object(t), Value::Object(p)) = (target, probe) {
            t.extend(p);
        }
        let e = match root {
            "pool" => lenient::from_value::<PoolAddParameter>(doc).err(),
            "job" => lenient::from_value::<JobAddParameter>(doc).err(),
            "schedule" => lenient::from_value::<crate::model::schedule::JobScheduleAddParameter>(doc).err(),
            _ => lenient::from_value::<TaskAddParameter>(doc).err(),
        };
        e.map(|e| e.to_string())
    }

    #[test]
    fn the_table_matches_what_the_types_read() {
        for (kind, fields) in KINDS {
            for (field, policy) in fields.iter() {
                let unknown = read_with(kind, field).is_some_and(|e| e.contains(&format!("unknown field `{field}`")));
                assert_eq!(unknown, matches!(policy, Refused(_)), "{kind}.{field}: the table says {policy:?}");
                if let Object(inner) | List(inner) = policy {
                    assert!(KINDS.iter().any(|(k, _)| k == inner), "{kind}: {inner} is not in the table");
                }
            }
            // Every field the type reads is in the table: serde lists them for an unknown one.
            let e = read_with(kind, "\u{1}probe").unwrap_or_default();
            let listed = e.split("expected one of ").nth(1).or_else(|| e.split("expected ").nth(1)).unwrap_or("");
            let read: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
            assert!(!read.is_empty(), "{kind}: {e}");
            for field in read {
                assert!(fields.iter().any(|(f, _)| *f == field), "{kind}.{field} is read but not in the table");
            }
        }
    }

    #[test]
    fn finds_every_problem_and_kept_field() {
        let doc = json!({"id": "p", "virtualMachineConfiguration": {"imageReference": {}}, "vmSize": "x",
                         "mountConfiguration": [], "colour": "red",
                         "startTask": {"commandLine": "x", "containerSettings": {},
                                       "resourceFiles": [{"httpUrl": "h", "filePath": "f"},
                                                         {"identityReference": {}, "filePath": "g"}]}});
        let report = check("PoolAddParameter", &doc);
        let paths: Vec<&str> = report.problems.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "colour",
                "mountConfiguration",
                "startTask.containerSettings",
                "startTask.resourceFiles[1].identityReference"
            ]
        );
        let kept: Vec<&str> = report.kept.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(kept, ["virtualMachineConfiguration", "vmSize"]);
    }
}
