//! Actions: what a command does when it takes more than one record or reaches the broker or
//! storage as well as Redis (a pool and its queues, a job with its auto pool and its manager
//! task, a task's files, terminating a task, the due jobs of schedules), written once for every
//! front end: the `drover` CLI, `drover-api`, and the job scheduler in `drover-monitor`.

use crate::model::{CloudTask, JobAddParameter, PoolAddParameter, TaskAddParameter, TaskState};
use crate::node_files::{FileRead, NodeFiles};
use crate::queue::{self, Publisher, Topology};
use crate::staging::beneath::Entry;
use crate::status::StatusStore;
use crate::{Config, Error, Result};

/// Declares a pool's queues, then records it (again, unchanged: nothing happens). With
/// `auto_job`, it is that job's auto pool, removed once the job has completed.
pub async fn create_pool(
    config: &Config,
    store: &StatusStore,
    spec: &PoolAddParameter,
    auto_job: Option<&str>,
) -> Result<()> {
    crate::autoscale::validate_pool(spec)?;
    let connection = queue::connect(&config.broker(), "drover").await?;
    let channel = connection.create_channel().await?;
    let declared = Topology::new(&config.account).declare_pool(&channel, &spec.id).await;
    let _ = connection.close(200, "bye".into()).await;
    declared?;
    store.create_pool_for(spec, auto_job).await
}

/// Deletes a pool: its queues, then its record.
pub async fn delete_pool(config: &Config, store: &StatusStore, pool: &str) -> Result<()> {
    store.get_pool(pool).await?;
    let connection = queue::connect(&config.broker(), "drover").await?;
    let channel = connection.create_channel().await?;
    let deleted = Topology::new(&config.account).delete_pool(&channel, pool).await;
    let _ = connection.close(200, "bye".into()).await;
    deleted?;
    store.delete_pool(pool).await
}

/// How many nodes of each pool are in each state (Azure's list pool node counts).
pub async fn node_counts(store: &StatusStore) -> Result<Vec<crate::model::node::PoolNodeCounts>> {
    let mut counts = Vec::new();
    for pool in store.list_pools().await? {
        let nodes = store.list_nodes(&pool.spec.id).await?;
        counts.push(crate::model::node::PoolNodeCounts::of(&pool.spec.id, &nodes));
    }
    Ok(counts)
}

/// Whether `file` is one of the files every task keeps in storage once its attempt ends.
fn kept(file: &str) -> bool {
    matches!(file, "stdout.txt" | "stderr.txt")
}

/// A task as its files need it, and the file service of the node that ran it last while that
/// node is alive and serves its files (its directory may be gone: its retention time passed).
async fn task_node(store: &StatusStore, job: &str, task: &str) -> Result<(CloudTask, Option<NodeFiles>)> {
    let shown = store.get_task(job, task).await?;
    let Some(info) = shown.node_info.as_ref() else { return Ok((shown, None)) };
    let files = match store.node_file_service(&info.pool_id, &info.node_id).await {
        Ok(Some(service)) => Some(NodeFiles::task(&info.node_id, service, job, task)?),
        Ok(None) | Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok((shown, files))
}

/// One of a task's files (`range`: `bytes=START-[END]` of it), streamed. `stdout.txt` and
/// `stderr.txt` read, while the task runs, what it has written so far, from its node wherever
/// that is, and once its attempt ended, the copies kept in storage (an empty one is not stored:
/// it reads as empty). Other files are read from the task's directory on its node while the node
/// keeps it.
pub async fn task_file(
    staging: &crate::staging::Staging,
    store: &StatusStore,
    job: &str,
    task: &str,
    file: &str,
    range: Option<&str>,
) -> Result<FileRead> {
    crate::node_files::check_path("file path", file)?;
    let (shown, node) = task_node(store, job, task).await?;
    if shown.execution_info.is_none() {
        return Err(Error::State(format!("task {task:?} has not run yet: it has no {file}")));
    }
    let running = matches!(shown.state, TaskState::Running | TaskState::Preparing);
    if let Some(node) = node.as_ref().filter(|_| running || !kept(file)) {
        match node.read(file, range).await {
            Err(Error::NotFound { .. }) | Err(Error::State(_)) if kept(file) => {}
            other => return other,
        }
    }
    if !kept(file) {
        return Err(Error::NotFound { kind: "file", id: file.into() });
    }
    let files = staging.task_files(job, task);
    match staging.s3.open(&files.bucket, &format!("{}/{file}", files.key), range).await {
        Err(Error::NotFound { .. }) if shown.state == TaskState::Completed && range.is_none() => {
            let entry = Entry::stored(file, 0, 0);
            Ok(FileRead { entry, start: 0, length: 0, body: Box::new(tokio::io::empty()) })
        }
        other => other,
    }
}

/// A task's files: those in its directory on its node while the node keeps it (its top, or
/// every level with `recursive`), else the `stdout.txt` and `stderr.txt` kept in storage.
pub async fn list_task_files(
    staging: &crate::staging::Staging,
    store: &StatusStore,
    job: &str,
    task: &str,
    recursive: bool,
) -> Result<Vec<Entry>> {
    let (shown, node) = task_node(store, job, task).await?;
    if shown.execution_info.is_none() {
        return Ok(Vec::new());
    }
    if let Some(node) = &node {
        match node.list("", recursive).await {
            Err(Error::NotFound { .. }) | Err(Error::State(_)) => {}
            other => return other,
        }
    }
    let files = staging.task_files(job, task);
    let stored = staging.s3.list(&files.bucket, &format!("{}/", files.key)).await?;
    let modified_ms =
        chrono::DateTime::parse_from_rfc3339(&shown.state_transition_time).map_or(0, |t| t.timestamp_millis());
    Ok(stored
        .into_iter()
        .filter_map(|(key, size)| {
            let name = key.rsplit('/').next().filter(|n| kept(n))?.to_string();
            Some(Entry::stored(&name, u64::try_from(size).unwrap_or(0), modified_ms))
        })
        .collect())
}

/// Removes one of a task's files (a directory: only when empty, or with `recursive`) from its
/// node, and for `stdout.txt` and `stderr.txt` the copy kept in storage.
pub async fn delete_task_file(
    staging: &crate::staging::Staging,
    store: &StatusStore,
    job: &str,
    task: &str,
    file: &str,
    recursive: bool,
) -> Result<()> {
    crate::node_files::check_path("file path", file)?;
    if file.is_empty() {
        return Err(Error::invalid("file path: name a file beneath the task's directory"));
    }
    let (_, node) = task_node(store, job, task).await?;
    let mut found = false;
    if let Some(node) = &node {
        match node.remove(file, recursive).await {
            Ok(()) => found = true,
            Err(Error::NotFound { .. }) => {}
            Err(Error::State(_)) if kept(file) => {}
            Err(e) => return Err(e),
        }
    }
    if kept(file) {
        let files = staging.task_files(job, task);
        found |= staging.s3.remove(&files.bucket, &format!("{}/{file}", files.key)).await?;
    }
    match found {
        true => Ok(()),
        false => Err(Error::NotFound { kind: "file", id: file.into() }),
    }
}

/// The file service of the live node `node` of `pool` (Azure's node files: the node's part of
/// the work directory: its tasks' directories and its start task's).
pub async fn node_files(store: &StatusStore, pool: &str, node: &str) -> Result<NodeFiles> {
    match store.node_file_service(pool, node).await? {
        Some(service) => NodeFiles::node(node, service),
        None => Err(Error::State(format!(
            "node {node:?} does not serve its files (it is not running, or was started with --files-listen off)"
        ))),
    }
}

/// Terminates a task: one that has not started completes at once (its dependents released or
/// blocked as its exit conditions say); a running one is killed by its node, which this waits
/// for up to `wait`. False if the node has not killed it by then (it will when it next checks).
pub async fn terminate_task(
    publisher: &Publisher,
    store: &StatusStore,
    job: &str,
    task: &str,
    wait: std::time::Duration,
) -> Result<bool> {
    let shown = store.get_task(job, task).await?;
    let blocks = shown.spec.blocks_dependents(false, None, Some(crate::model::task::FailureCode::TaskTerminated));
    match store.terminate_task(job, task, blocks).await? {
        crate::status::Termination::AlreadyCompleted => {
            Err(Error::State(format!("task {task:?} of job {job:?} has already completed")))
        }
        crate::status::Termination::Terminated(outbox) => {
            publish(publisher, store, job, &outbox).await?;
            Ok(true)
        }
        crate::status::Termination::Killing(_) => {
            let deadline = std::time::Instant::now() + wait;
            while store.task_record(job, task).await?.state != crate::model::TaskState::Completed {
                if std::time::Instant::now() > deadline {
                    return Ok(false);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok(true)
        }
    }
}

/// What Azure's pool update and patch change: the rest of a pool is fixed once created (its
/// size and autoscaling change through their own operations).
const POOL_CHANGEABLE: [&str; 5] =
    ["startTask", "applicationPackageReferences", "certificateReferences", "metadata", "targetNodeCommunicationMode"];

/// Changes a pool (Azure's pool patch: the fields given replace theirs; with `replace`, its
/// update properties: a field left out goes back to its default). Nodes use the new start task
/// and packages when they next join.
pub async fn change_pool(store: &StatusStore, pool: &str, change: &serde_json::Value, replace: bool) -> Result<()> {
    let serde_json::Value::Object(given) = change else {
        return Err(Error::invalid("the pool's changes must be a JSON object"));
    };
    if let Some(field) = given.keys().find(|k| !POOL_CHANGEABLE.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "{field}: a pool's {field} cannot be changed this way (only {})",
            POOL_CHANGEABLE.join(", ")
        )));
    }
    store
        .change_pool(pool, |current| {
            let mut spec =
                serde_json::to_value(&*current).map_err(|e| Error::Internal(format!("pool {pool:?}: {e}")))?;
            let Some(fields) = spec.as_object_mut() else {
                return Err(Error::Internal(format!("pool {pool:?}: not an object")));
            };
            for field in POOL_CHANGEABLE {
                // An empty list is the default (Azure's clients send empty certificateReferences
                // and applicationPackageReferences with every update).
                match given.get(field).filter(|v| !v.is_null()) {
                    Some(value) if value.as_array().is_some_and(|a| a.is_empty()) => {
                        fields.remove(field);
                    }
                    Some(value) => {
                        fields.insert(field.to_string(), value.clone());
                    }
                    None if replace => {
                        fields.remove(field);
                    }
                    None => {}
                }
            }
            *current =
                crate::model::lenient::read_checked::<PoolAddParameter>("PoolAddParameter", &spec.to_string(), None)
                    .map(|(pool, _)| pool)
                    .map_err(Error::invalid)?;
            Ok(())
        })
        .await
        .map(|_| ())
}

/// Removes nodes from a pool (Azure's remove nodes): each is told to leave (handing back,
/// killing or finishing its tasks as `option` says), then the pool asks for that many nodes
/// fewer, so its actuator starts no replacement. An unknown node refuses the whole request.
pub async fn remove_nodes(
    store: &StatusStore,
    pool: &str,
    nodes: &[String],
    option: crate::model::node::TasksOption,
) -> Result<()> {
    if nodes.is_empty() {
        return Err(Error::invalid("nodeList: name at least one node"));
    }
    for node in nodes {
        store.get_node(pool, node).await?;
    }
    for node in nodes {
        store.order_node(pool, node, crate::model::node::NodeOrder::Remove(option)).await?;
    }
    let spec = store.get_pool(pool).await?.spec;
    if let (false, Some(target)) = (spec.autoscales(), spec.target_dedicated_nodes) {
        store.resize_pool(pool, target.saturating_sub(nodes.len() as u32)).await?;
    }
    Ok(())
}

/// Publishes what a transition of `job` put in its outbox (nothing when it is empty), then
/// clears the outbox.
async fn publish(publisher: &Publisher, store: &StatusStore, job: &str, outbox: &crate::status::Outbox) -> Result<()> {
    if outbox.is_empty() {
        return Ok(());
    }
    publisher.publish_outbox(store, &store.job_pool(job).await?, outbox).await
}

/// Enables a disabled job and publishes the tasks that waited for it.
pub async fn enable_job(publisher: &Publisher, store: &StatusStore, job: &str) -> Result<()> {
    let tag = format!("enable-{}-{}", std::process::id(), crate::model::now_ms());
    let outbox = store.enable_job(job, &tag).await?;
    publish(publisher, store, job, &outbox).await
}

/// Deletes a task; one that runs is terminated first (waiting up to `wait` for its node).
pub async fn delete_task(
    publisher: &Publisher,
    store: &StatusStore,
    job: &str,
    task: &str,
    wait: std::time::Duration,
) -> Result<()> {
    let state = store.task_record(job, task).await?.state;
    if matches!(state, crate::model::TaskState::Preparing | crate::model::TaskState::Running)
        && !terminate_task(publisher, store, job, task, wait).await?
    {
        return Err(Error::State(format!("task {task:?} of job {job:?} is still being terminated; try again")));
    }
    let outbox = store.delete_task(job, task).await?;
    publish(publisher, store, job, &outbox).await
}

/// Makes a failed task active again and publishes its message.
pub async fn reactivate_task(publisher: &Publisher, store: &StatusStore, job: &str, task: &str) -> Result<()> {
    let outbox = store.reactivate_task(job, task).await?;
    publish(publisher, store, job, &outbox).await
}

/// Evaluates an autoscale formula (`formula`, else the pool's) against the pool's recent
/// samples without acting (Azure's evaluate); a formula that fails says why in the run's error.
pub async fn evaluate_autoscale(
    store: &StatusStore,
    pool: &str,
    formula: Option<&str>,
) -> Result<crate::model::pool::AutoScaleRun> {
    let shown = store.pool_status(pool).await?;
    let formula = match formula.or(shown.spec.auto_scale_formula.as_deref()) {
        Some(f) => f.to_string(),
        None => return Err(Error::invalid(format!("pool {pool:?} has no autoScaleFormula: give one to evaluate"))),
    };
    let mut samples = store.samples(pool).await?;
    if samples.is_empty() {
        samples.push(store.pool_sample(pool).await?);
    }
    let nodes = shown.current_dedicated_nodes.unwrap_or(0);
    let target = shown.auto_scale_run.as_ref().and_then(|r| r.target_dedicated_nodes).unwrap_or(nodes);
    let inputs = crate::autoscale::inputs(&samples, 1.0, nodes, shown.spec.task_slots_per_node, target);
    Ok(crate::autoscale::evaluate(&formula, &inputs))
}

/// Replaces a schedule's schedule, jobSpecification and metadata with `spec`'s (Azure's
/// update); `spec` may leave out the id (if it has one, it must be `id`) and keeps the
/// schedule's displayName when it has none.
pub async fn update_schedule(
    store: &StatusStore,
    id: &str,
    mut spec: crate::model::schedule::JobScheduleAddParameter,
) -> Result<()> {
    if !spec.id.is_empty() && spec.id != id {
        return Err(Error::invalid(format!("id {:?} is not the schedule's ({id:?})", spec.id)));
    }
    let current = store.get_schedule(id).await?;
    spec.id = id.to_string();
    spec.display_name = spec.display_name.or(current.spec.display_name);
    store.update_schedule(&spec).await
}

/// What a job update or patch may change (Azure's JobPatchParameter, but for `poolInfo`, which
/// may only be given unchanged).
const CHANGEABLE: [&str; 5] = ["priority", "maxParallelTasks", "onAllTasksComplete", "constraints", "metadata"];

/// Changes an active job as Azure's patch (`replace` false: the fields given) or update
/// (`replace` true: the fields given, the others back to their defaults) does.
pub async fn change_job(store: &StatusStore, job: &str, change: &serde_json::Value, replace: bool) -> Result<()> {
    let serde_json::Value::Object(given) = change else {
        return Err(Error::invalid("the job's changes must be a JSON object"));
    };
    // An update sends the whole job back, read-only properties too: only a patch is refused
    // for what cannot change.
    let unchangeable = given.keys().find(|k| !CHANGEABLE.contains(&k.as_str()) && k.as_str() != "poolInfo");
    if let (Some(field), false) = (unchangeable, replace) {
        return Err(Error::invalid(format!(
            "{field}: a job's {field} cannot be changed (only {})",
            CHANGEABLE.join(", ")
        )));
    }
    store
        .update_job(job, |current| {
            let mut spec = serde_json::to_value(current).map_err(|e| Error::Internal(format!("job {job:?}: {e}")))?;
            let Some(fields) = spec.as_object_mut() else {
                return Err(Error::Internal(format!("job {job:?}: not an object")));
            };
            for field in CHANGEABLE.iter().chain(&["poolInfo"]) {
                match given.get(*field).filter(|v| !v.is_null()) {
                    Some(value) => {
                        fields.insert(field.to_string(), value.clone());
                    }
                    None if replace && *field != "poolInfo" => {
                        fields.remove(*field);
                    }
                    None => {}
                }
            }
            crate::model::lenient::read_checked::<JobAddParameter>("JobAddParameter", &spec.to_string(), None)
                .map(|(job, _)| job)
                .map_err(Error::invalid)
        })
        .await
}

/// Changes a task's `constraints` as Azure's task update does (`change` holds them; left out:
/// none, the job's retry count applies).
pub async fn update_task(store: &StatusStore, job: &str, task: &str, change: &serde_json::Value) -> Result<()> {
    let constraints = change.get("constraints").cloned().unwrap_or(serde_json::Value::Null);
    store
        .update_task(job, task, |current| {
            let mut spec = serde_json::to_value(current).map_err(|e| Error::Internal(format!("task {task:?}: {e}")))?;
            if let Some(fields) = spec.as_object_mut() {
                match &constraints {
                    serde_json::Value::Null => fields.remove("constraints"),
                    c => fields.insert("constraints".into(), c.clone()),
                };
            }
            crate::model::lenient::read_checked::<TaskAddParameter>("TaskAddParameter", &spec.to_string(), None)
                .map(|(task, _)| task)
                .map_err(Error::invalid)
        })
        .await
}

/// Creates a job as Azure does: its auto pool first, then the job, then its manager task (the
/// job's first task). Run again after an interruption with the same spec, it adds what is
/// missing; else an existing id is a conflict. Returns the job as made (its pool named).
pub async fn create_job(config: &Config, store: &StatusStore, mut spec: JobAddParameter) -> Result<JobAddParameter> {
    if let Some(auto) = spec.pool_info.auto_pool_specification.clone() {
        spec.validate()?;
        let pool = auto.pool_for(&spec.id)?;
        let owner = auto.ends_with_job().then_some(spec.id.as_str());
        create_pool(config, store, &pool, owner).await?;
        spec.pool_info.pool_id = pool.id;
    }
    let manager = match &spec.job_manager_task {
        Some(_) => Some(manager_task(store, &spec).await?),
        None => None,
    };
    let resumed = match store.create_job(&spec).await {
        Ok(()) => false,
        Err(Error::Conflict { .. })
            if manager.is_some() && store.same_spec(&store.get_job(&spec.id).await?.spec, &spec) =>
        {
            true
        }
        Err(e) => return Err(e),
    };
    if let Some(task) = manager {
        if resumed && has_task(store, &spec.id, &task.id).await? {
            return Err(Error::Conflict { kind: "job", id: spec.id.clone() });
        }
        add_tasks(config, store, &spec.id, task).await?;
    }
    Ok(spec)
}

/// The job manager of `job` as the task it becomes, checked against its pool's slots.
async fn manager_task(store: &StatusStore, job: &JobAddParameter) -> Result<TaskAddParameter> {
    let Some(m) = &job.job_manager_task else { return Err(Error::invalid("the job has no jobManagerTask")) };
    let slots = store.get_pool(&job.pool_info.pool_id).await?.spec.task_slots_per_node;
    let task = m.task(slots);
    if task.slots() > slots {
        return Err(Error::invalid(format!(
            "jobManagerTask {:?}: requiredSlots {} is more than pool {:?}'s taskSlotsPerNode {slots}",
            m.id,
            task.slots(),
            job.pool_info.pool_id
        )));
    }
    Ok(task)
}

/// Adds the manager task of the job `job`, made from `spec`, unless it has it already (a job
/// schedule's job whose maker stopped before it added the manager).
pub async fn ensure_manager(config: &Config, store: &StatusStore, job: &JobAddParameter) -> Result<bool> {
    let task = manager_task(store, job).await?;
    if has_task(store, &job.id, &task.id).await? {
        return Ok(false);
    }
    match add_tasks(config, store, &job.id, task).await {
        Ok(()) => Ok(true),
        // Another scheduler added it meanwhile.
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn has_task(store: &StatusStore, job: &str, task: &str) -> Result<bool> {
    match store.get_task(job, task).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `task` to `job` and publishes its message.
async fn add_tasks(config: &Config, store: &StatusStore, job: &str, task: TaskAddParameter) -> Result<()> {
    let publisher = Publisher::connect(&config.broker(), Topology::new(&config.account)).await?;
    let mut submission = crate::submit::Submission {
        store,
        publisher: &publisher,
        job_id: job,
        continue_on_error: false,
        progress: &|_| {},
    };
    let added = submission.add(&[task]).await;
    publisher.close().await;
    added.map(|_| ())
}

/// Makes the job of every schedule that is due at `now`, each once however many schedulers run:
/// its auto pool first, then the job, then its manager task. A scheduled job whose manager is
/// missing (its maker stopped in between) gets it. Returns the ids of the jobs made.
pub async fn run_due_schedules(config: &Config, store: &StatusStore, now: i64) -> Result<Vec<String>> {
    let mut made = Vec::new();
    for mut due in store.due_jobs(now).await? {
        if let Some(auto) = due.job.pool_info.auto_pool_specification.clone() {
            let pool = auto.pool_for(&due.job.id)?;
            let owner = auto.ends_with_job().then_some(due.job.id.as_str());
            create_pool(config, store, &pool, owner).await?;
            due.job.pool_info.pool_id = pool.id;
        }
        if store.make_scheduled_job(&due, now).await? {
            made.push(due.job.id.clone());
        }
    }
    for schedule in store.list_schedules().await? {
        let Some(recent) = schedule.execution_info.recent_job else { continue };
        if schedule.spec.job_specification.get("jobManagerTask").is_none_or(|m| m.is_null()) {
            continue;
        }
        let job = match store.get_job(&recent.id).await {
            Ok(job) if job.state == crate::model::JobState::Active => job,
            Ok(_) | Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if ensure_manager(config, store, &job.spec).await? {
            tracing::info!(job = %recent.id, "the scheduled job's manager task was added");
        }
    }
    Ok(made)
}
