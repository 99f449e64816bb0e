//! The Batch data-plane operations drover serves, each doing what the same `drover` command does
//! (through `drover_core::actions` and the status store).

use crate::odata;
use crate::reply::{self, created, entity, json_response, ok_entity, ApiError, Reply};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use drover_core::model::job::DisableTasks;
use drover_core::model::node::{NodeOrder, TasksOption};
use drover_core::model::schedule::JobScheduleAddParameter;
use drover_core::model::{lenient, rfc3339, JobAddParameter, PoolAddParameter, TaskAddParameter};
use drover_core::node_files::FileRead;
use drover_core::queue::Publisher;
use drover_core::staging::beneath::Entry;
use drover_core::staging::Staging;
use drover_core::status::StatusStore;
use drover_core::{actions, Config};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

/// One account served: what its requests share.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) store: StatusStore,
    pub(crate) staging: Staging,
    pub(crate) keys: crate::auth::Keys,
    /// `http`, or `https` when served over TLS: the links given to clients.
    pub(crate) scheme: &'static str,
    /// Publishes the messages of the tasks added (one connection, kept).
    pub(crate) publisher: Publisher,
}

/// The account a request was signed for (the authentication layer puts it in the request).
type Shared = Extension<Arc<App>>;

/// The most tasks one `addtaskcollection` takes, and its largest body, as Azure's.
const COLLECTION_TASKS: usize = 100;
const MAX_BODY: usize = 1 << 20;
/// The largest body read at all (a larger one is cut off before a handler sees it).
pub(crate) const BODY_LIMIT: usize = 16 << 20;
/// The longest page of a list.
const MAX_RESULTS: usize = 1000;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/pools", post(add_pool).get(list_pools))
        .route("/pools/{pool}", get(get_pool).head(get_pool).delete(delete_pool).patch(patch_pool))
        .route("/pools/{pool}/updateproperties", post(update_pool_properties))
        .route("/nodecounts", get(node_counts))
        .route("/pools/{pool}/nodes", get(list_nodes))
        .route("/pools/{pool}/nodes/{node}", get(get_node))
        .route("/pools/{pool}/nodes/{node}/disablescheduling", post(disable_scheduling))
        .route("/pools/{pool}/nodes/{node}/enablescheduling", post(enable_scheduling))
        .route("/pools/{pool}/nodes/{node}/reboot", post(reboot_node))
        .route("/pools/{pool}/removenodes", post(remove_nodes))
        .route("/pools/{pool}/enableautoscale", post(enable_autoscale))
        .route("/pools/{pool}/disableautoscale", post(disable_autoscale))
        .route("/pools/{pool}/evaluateautoscale", post(evaluate_autoscale))
        .route("/pools/{pool}/resize", post(resize_pool))
        .route("/pools/{pool}/stopresize", post(stop_resize))
        .route("/jobschedules", post(add_schedule).get(list_schedules))
        .route(
            "/jobschedules/{schedule}",
            get(get_schedule).head(get_schedule).put(update_schedule).delete(delete_schedule),
        )
        .route("/jobschedules/{schedule}/{action}", post(schedule_state))
        .route("/jobs/{job}/tasks/{task}/terminate", post(terminate_task))
        .route("/jobs/{job}/tasks/{task}/reactivate", post(reactivate_task))
        .route("/jobs/{job}/disable", post(disable_job))
        .route("/jobs/{job}/enable", post(enable_job))
        .route("/jobs/{job}/tasks/{task}/subtasksinfo", get(list_subtasks))
        .route("/jobs/{job}/tasks/{task}/files", get(list_task_files))
        .route("/pools/{pool}/nodes/{node}/files", get(list_node_files))
        .route("/pools/{pool}/nodes/{node}/files/{*path}", get(node_file).head(node_file).delete(node_file))
        .route("/jobs/{job}/jobpreparationandreleasetaskstatus", get(prep_release_status))
        .route("/applications", get(list_applications))
        .route("/applications/{application}", get(get_application))
        .route("/jobs", post(add_job).get(list_jobs))
        .route("/jobs/{job}", get(get_job).delete(delete_job).patch(patch_job).put(update_job))
        .route("/jobs/{job}/terminate", post(terminate_job))
        .route("/jobs/{job}/taskcounts", get(task_counts))
        .route("/jobs/{job}/tasks", post(add_task).get(list_tasks))
        .route("/jobs/{job}/addtaskcollection", post(add_task_collection))
        .route("/jobs/{job}/tasks/{task}", get(get_task).put(update_task).delete(delete_task))
        .route("/jobs/{job}/tasks/{task}/files/{*path}", get(task_file).head(task_file).delete(task_file))
        .fallback(not_served)
        .method_not_allowed_fallback(not_served)
}

/// The service's address as the client sees it, for links.
pub(crate) fn base(app: &App, headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("{}://{host}", app.scheme)
}

/// The body as JSON text, or the error Azure gives for one that is not.
fn text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::invalid("the body is not UTF-8 JSON"))
}

/// Reads a body leniently as Azure's `kind`, every problem named with its place.
fn read<T: serde::de::DeserializeOwned>(kind: &str, body: &Bytes) -> Result<T, ApiError> {
    let (read, notes) = lenient::read_checked::<T>(kind, text(body)?, Some((1, 1))).map_err(ApiError::invalid)?;
    for note in notes {
        tracing::debug!(%kind, %note, "a field without effect was kept");
    }
    Ok(read)
}

async fn not_served(method: Method, uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    // Operations of Azure's API that drover does not serve (yet) say so, as Azure does for
    // features an account lacks; anything else is not a resource.
    let known =
        ["/pools", "/jobs", "/jobschedules", "/applications", "/nodecounts", "/supportedimages", "/poolusagemetrics"];
    if known.iter().any(|k| path == *k || path.starts_with(&format!("{k}/"))) {
        return ApiError::not_supported(&format!("{method} {path}"));
    }
    ApiError::new(StatusCode::NOT_FOUND, "InvalidUri", format!("{path} is not a resource of the Batch API"))
}

async fn add_pool(Extension(app): Shared, headers: HeaderMap, body: Bytes) -> Reply {
    let spec: PoolAddParameter = read("PoolAddParameter", &body)?;
    drover_core::model::validate_id("pool id", &spec.id)?;
    if app.store.get_pool(&spec.id).await.is_ok() {
        return Err(drover_core::Error::Conflict { kind: "pool", id: spec.id }.into());
    }
    actions::create_pool(&app.config, &app.store, &spec, None).await?;
    Ok(created(&base(&app, &headers), &format!("/pools/{}", spec.id)))
}

async fn list_pools(Extension(app): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Reply {
    let mut pools = Vec::new();
    for pool in app.store.list_pools().await? {
        pools.push((pool.spec.id.clone(), serde_json::to_value(&pool).unwrap_or_default()));
    }
    page(&app, &headers, "pools", "/pools", &q, pools)
}

/// How many nodes of each pool are in each state.
async fn node_counts(Extension(app): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Reply {
    let counts = actions::node_counts(&app.store).await?;
    let items = counts.into_iter().map(|c| (c.pool_id.clone(), serde_json::to_value(c).unwrap_or_default())).collect();
    page(&app, &headers, "poolnodecounts", "/nodecounts", &q, items)
}

async fn pool_entity(app: &App, headers: &HeaderMap, pool: &str) -> Result<Value, ApiError> {
    let shown = app.store.pool_status(pool).await?;
    Ok(entity(&base(app, headers), "pools", serde_json::to_value(&shown).unwrap_or_default()))
}

async fn get_pool(
    Extension(app): Shared,
    method: Method,
    headers: HeaderMap,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    Ok(head_or(method, read_entity(&headers, &q, pool_entity(&app, &headers, &pool).await?)?))
}

async fn delete_pool(Extension(app): Shared, headers: HeaderMap, Path(pool): Path<String>) -> Reply {
    odata::write_conditions(&headers, pool_entity(&app, &headers, &pool)).await?;
    actions::delete_pool(&app.config, &app.store, &pool).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_nodes(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    app.store.get_pool(&pool).await?;
    let nodes = app.store.list_nodes(&pool).await?;
    let nodes = nodes.iter().map(|n| (n.id.clone(), serde_json::to_value(n).unwrap_or_default())).collect();
    page(&app, &headers, "pools/@Element/nodes", &format!("/pools/{pool}/nodes"), &q, nodes)
}

async fn get_node(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((pool, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let shown = app.store.get_node(&pool, &node).await?;
    read_entity(&headers, &q, entity(&base(&app, &headers), "nodes", serde_json::to_value(&shown).unwrap_or_default()))
}

async fn disable_scheduling(Extension(app): Shared, Path((pool, node)): Path<(String, String)>, body: Bytes) -> Reply {
    let option = tasks_option(&object(&body)?, "nodeDisableSchedulingOption")?;
    app.store.set_node_scheduling(&pool, &node, Some(option)).await?;
    Ok(StatusCode::OK.into_response())
}

/// The option named by `field` of a node request's body (Azure's default when absent).
fn tasks_option(given: &Value, field: &str) -> Result<TasksOption, ApiError> {
    match given.get(field).and_then(Value::as_str) {
        None => Ok(TasksOption::default()),
        Some(text) => TasksOption::parse(text).ok_or_else(|| {
            ApiError::invalid(format!("{field} {text:?}: use requeue, terminate, taskcompletion or retaineddata"))
        }),
    }
}

async fn reboot_node(Extension(app): Shared, Path((pool, node)): Path<(String, String)>, body: Bytes) -> Reply {
    let option = tasks_option(&object(&body)?, "nodeRebootOption")?;
    app.store.order_node(&pool, &node, NodeOrder::Reboot(option)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn remove_nodes(Extension(app): Shared, headers: HeaderMap, Path(pool): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, pool_entity(&app, &headers, &pool)).await?;
    let given = object(&body)?;
    let option = tasks_option(&given, "nodeDeallocationOption")?;
    let nodes: Vec<String> = match given.get("nodeList") {
        Some(Value::Array(list)) => list.iter().filter_map(|n| n.as_str().map(str::to_string)).collect(),
        _ => return Err(ApiError::invalid("nodeList: required, a list of node ids".to_string())),
    };
    actions::remove_nodes(&app.store, &pool, &nodes, option).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn enable_scheduling(Extension(app): Shared, Path((pool, node)): Path<(String, String)>) -> Reply {
    app.store.set_node_scheduling(&pool, &node, None).await?;
    Ok(StatusCode::OK.into_response())
}

/// The JSON object of a body, or an empty one for none.
fn object(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text(body)?).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn enable_autoscale(Extension(app): Shared, Path(pool): Path<String>, body: Bytes) -> Reply {
    let v = object(&body)?;
    let current = app.store.get_pool(&pool).await?;
    let formula =
        v.get("autoScaleFormula").and_then(Value::as_str).map(str::to_string).or(current.spec.auto_scale_formula);
    let formula = formula.ok_or_else(|| ApiError::invalid("autoScaleFormula: required (the pool has none)"))?;
    let interval = match v.get("autoScaleEvaluationInterval") {
        Some(i) if !i.is_null() => Some(
            serde_json::from_value(i.clone())
                .map_err(|e| ApiError::invalid(format!("autoScaleEvaluationInterval: {e}")))?,
        ),
        _ => None,
    };
    app.store.set_autoscale(&pool, Some(&formula), interval).await?;
    Ok(StatusCode::OK.into_response())
}

async fn disable_autoscale(Extension(app): Shared, Path(pool): Path<String>) -> Reply {
    app.store.set_autoscale(&pool, None, None).await?;
    Ok(StatusCode::OK.into_response())
}

async fn evaluate_autoscale(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(pool): Path<String>,
    body: Bytes,
) -> Reply {
    let v = object(&body)?;
    let formula = v.get("autoScaleFormula").and_then(Value::as_str);
    let run = actions::evaluate_autoscale(&app.store, &pool, formula).await?;
    let mut body = serde_json::to_value(run).unwrap_or_default();
    body["odata.metadata"] =
        json!(format!("{}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun", base(&app, &headers)));
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

/// Azure's resize: `targetDedicatedNodes` (spot nodes are counted with them).
async fn patch_pool(Extension(app): Shared, headers: HeaderMap, Path(pool): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, pool_entity(&app, &headers, &pool)).await?;
    actions::change_pool(&app.store, &pool, &object(&body)?, false).await?;
    Ok(StatusCode::OK.into_response())
}

async fn update_pool_properties(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(pool): Path<String>,
    body: Bytes,
) -> Reply {
    odata::write_conditions(&headers, pool_entity(&app, &headers, &pool)).await?;
    actions::change_pool(&app.store, &pool, &object(&body)?, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn resize_pool(Extension(app): Shared, headers: HeaderMap, Path(pool): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, pool_entity(&app, &headers, &pool)).await?;
    let v = object(&body)?;
    let count = |k: &str| v.get(k).and_then(|n| n.as_u64().or_else(|| n.as_str().and_then(|s| s.parse().ok())));
    let target = count("targetDedicatedNodes").unwrap_or(0) + count("targetLowPriorityNodes").unwrap_or(0);
    let target = u32::try_from(target).map_err(|_| ApiError::invalid("targetDedicatedNodes: too many nodes"))?;
    app.store.resize_pool(&pool, target).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Azure's stop resize: the pool keeps the nodes it has now.
async fn stop_resize(Extension(app): Shared, Path(pool): Path<String>) -> Reply {
    let now = app.store.pool_status(&pool).await?.current_dedicated_nodes.unwrap_or(0);
    app.store.resize_pool(&pool, now).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn add_schedule(Extension(app): Shared, headers: HeaderMap, body: Bytes) -> Reply {
    let spec: JobScheduleAddParameter = read("JobScheduleAddParameter", &body)?;
    app.store.create_schedule(&spec).await?;
    Ok(created(&base(&app, &headers), &format!("/jobschedules/{}", spec.id)))
}

async fn list_schedules(Extension(app): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Reply {
    let schedules = app.store.list_schedules().await?;
    let items = schedules.iter().map(|s| (s.spec.id.clone(), serde_json::to_value(s).unwrap_or_default())).collect();
    page(&app, &headers, "jobschedules", "/jobschedules", &q, items)
}

async fn schedule_entity(app: &App, headers: &HeaderMap, id: &str) -> Result<Value, ApiError> {
    let shown = app.store.get_schedule(id).await?;
    Ok(entity(&base(app, headers), "jobschedules", serde_json::to_value(&shown).unwrap_or_default()))
}

async fn get_schedule(
    Extension(app): Shared,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    Ok(head_or(method, read_entity(&headers, &q, schedule_entity(&app, &headers, &id).await?)?))
}

async fn update_schedule(Extension(app): Shared, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, schedule_entity(&app, &headers, &id)).await?;
    let spec: JobScheduleAddParameter = read("JobScheduleAddParameter", &body)?;
    actions::update_schedule(&app.store, &id, spec).await?;
    Ok(StatusCode::OK.into_response())
}

async fn delete_schedule(Extension(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    odata::write_conditions(&headers, schedule_entity(&app, &headers, &id)).await?;
    app.store.delete_schedule(&id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `disable`, `enable` and `terminate` of a schedule.
async fn schedule_state(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Reply {
    let (state, from, status): (&str, &[&str], StatusCode) = match action.as_str() {
        "disable" => ("disabled", &["active"], StatusCode::NO_CONTENT),
        "enable" => ("active", &["disabled", "active"], StatusCode::NO_CONTENT),
        "terminate" => ("completed", &["active", "disabled"], StatusCode::ACCEPTED),
        _ => return Err(ApiError::not_supported(&format!("POST /jobschedules/{id}/{action}"))),
    };
    odata::write_conditions(&headers, schedule_entity(&app, &headers, &id)).await?;
    app.store.set_schedule_state(&id, state, from).await?;
    Ok(status.into_response())
}

async fn terminate_task(Extension(app): Shared, Path((job, task)): Path<(String, String)>) -> Reply {
    actions::terminate_task(&app.publisher, &app.store, &job, &task, std::time::Duration::from_secs(30)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_task(Extension(app): Shared, headers: HeaderMap, Path((job, task)): Path<(String, String)>) -> Reply {
    odata::write_conditions(&headers, task_entity(&app, &headers, &job, &task)).await?;
    actions::delete_task(&app.publisher, &app.store, &job, &task, std::time::Duration::from_secs(30)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn reactivate_task(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((job, task)): Path<(String, String)>,
) -> Reply {
    odata::write_conditions(&headers, task_entity(&app, &headers, &job, &task)).await?;
    actions::reactivate_task(&app.publisher, &app.store, &job, &task).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Azure's ApplicationSummary of an application: its versions by name.
fn application_summary(a: &drover_core::status::Application) -> Value {
    json!({"id": a.id, "displayName": a.id, "versions": a.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>()})
}

async fn list_applications(
    Extension(app): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let apps = app.store.applications().await?;
    let items = apps.iter().map(|a| (a.id.clone(), application_summary(a))).collect();
    page(&app, &headers, "applications", "/applications", &q, items)
}

async fn get_application(Extension(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let apps = app.store.applications().await?;
    let a = apps.iter().find(|a| a.id == id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "ApplicationNotFound", format!("application {id:?} does not exist"))
    })?;
    let mut body = application_summary(a);
    body["odata.metadata"] = json!(format!("{}/$metadata#applications/@Element", base(&app, &headers)));
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

/// drover runs no multi-instance tasks: a task has no subtasks.
async fn list_subtasks(Extension(app): Shared, headers: HeaderMap, Path((job, task)): Path<(String, String)>) -> Reply {
    app.store.task_record(&job, &task).await?;
    let body =
        json!({"odata.metadata": format!("{}/$metadata#subtaskinformations", base(&app, &headers)), "value": []});
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

/// A task's files: its directory on its node while the node keeps it, else its kept stdout.txt
/// and stderr.txt.
async fn list_task_files(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((job, task)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let recursive = q.get("recursive").is_some_and(|r| r == "true");
    let entries = actions::list_task_files(&app.staging, &app.store, &job, &task, recursive).await?;
    let path = format!("/jobs/{}/tasks/{}/files", encode(&job), encode(&task));
    files_page(&app, &headers, &path, &q, entries)
}

/// A node's files (its part of the work directory: its tasks' directories, its start task's).
async fn list_node_files(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((pool, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let recursive = q.get("recursive").is_some_and(|r| r == "true");
    let entries = actions::node_files(&app.store, &pool, &node).await?.list("", recursive).await?;
    let path = format!("/pools/{}/nodes/{}/files", encode(&pool), encode(&node));
    files_page(&app, &headers, &path, &q, entries)
}

/// A page of files as Azure lists them (NodeFile), each with its URL under `path`.
fn files_page(app: &App, headers: &HeaderMap, path: &str, q: &HashMap<String, String>, entries: Vec<Entry>) -> Reply {
    let base = base(app, headers);
    let items = entries
        .into_iter()
        .map(|e| {
            let url = format!("{base}{path}/{}", e.name.split('/').map(encode).collect::<Vec<_>>().join("/"));
            (e.name.clone(), e.to_azure(Some(url)))
        })
        .collect();
    page(app, headers, "files", path, q, items)
}

async fn prep_release_status(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    app.store.get_job(&job).await?;
    let value = app.store.prep_release_status(&job).await?;
    let body = json!({"odata.metadata": format!("{}/$metadata#jobpreparationandreleasetaskstatuslist", base(&app, &headers)), "value": value});
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

async fn add_job(Extension(app): Shared, headers: HeaderMap, body: Bytes) -> Reply {
    let spec: JobAddParameter = read("JobAddParameter", &body)?;
    drover_core::model::validate_id("job id", &spec.id)?;
    if app.store.get_job(&spec.id).await.is_ok() {
        return Err(drover_core::Error::Conflict { kind: "job", id: spec.id }.into());
    }
    let made = actions::create_job(&app.config, &app.store, spec).await?;
    Ok(created(&base(&app, &headers), &format!("/jobs/{}", made.id)))
}

async fn list_jobs(Extension(app): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Reply {
    let mut jobs = Vec::new();
    let mut ids = app.store.job_ids().await?;
    ids.sort();
    for id in ids {
        match app.store.get_job(&id).await {
            Ok(job) => {
                let mut body = serde_json::to_value(&job).unwrap_or_default();
                expand(&q, &mut body, || (job.stats, format!("{}/jobs/{}", base(&app, &headers), encode(&id))));
                jobs.push((id, body))
            }
            Err(drover_core::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    page(&app, &headers, "jobs", "/jobs", &q, jobs)
}

async fn job_entity(app: &App, headers: &HeaderMap, job: &str) -> Result<Value, ApiError> {
    let shown = app.store.get_job(job).await?;
    Ok(entity(&base(app, headers), "jobs", serde_json::to_value(&shown).unwrap_or_default()))
}

async fn get_job(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let shown = app.store.get_job(&job).await?;
    let base = base(&app, &headers);
    let mut body = entity(&base, "jobs", serde_json::to_value(&shown).unwrap_or_default());
    expand(&q, &mut body, || (shown.stats, format!("{base}/jobs/{}", encode(&job))));
    read_entity(&headers, &q, body)
}

/// Adds an entity's `stats` when `$expand` asks for them (after its ETag: they change with every
/// task, what it is does not).
fn expand(
    q: &HashMap<String, String>,
    body: &mut Value,
    stats: impl FnOnce() -> (drover_core::model::job::Statistics, String),
) {
    if q.get("$expand").is_some_and(|e| e.split(',').any(|x| x.trim() == "stats")) {
        let (mut stats, url) = stats();
        stats.url = url;
        body["stats"] = serde_json::to_value(stats).unwrap_or_default();
    }
}

async fn delete_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    odata::write_conditions(&headers, job_entity(&app, &headers, &job)).await?;
    app.store.delete_job(&job).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Azure's job patch: the fields given change.
async fn patch_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>, body: Bytes) -> Reply {
    change_job(&app, &headers, &job, &body, false).await
}

/// Azure's job update: the fields given change, the others go back to their defaults.
async fn update_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>, body: Bytes) -> Reply {
    change_job(&app, &headers, &job, &body, true).await
}

async fn change_job(app: &App, headers: &HeaderMap, job: &str, body: &Bytes, replace: bool) -> Reply {
    odata::write_conditions(headers, job_entity(app, headers, job)).await?;
    actions::change_job(&app.store, job, &object(body)?, replace).await?;
    Ok(StatusCode::OK.into_response())
}

async fn terminate_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, job_entity(&app, &headers, &job)).await?;
    let reason = if body.is_empty() {
        None
    } else {
        let v: Value = serde_json::from_str(text(&body)?).map_err(|e| ApiError::invalid(e.to_string()))?;
        v.get("terminateReason").and_then(Value::as_str).map(str::to_string)
    };
    app.store.terminate_job(&job, reason.as_deref().unwrap_or("UserTerminate")).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn disable_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>, body: Bytes) -> Reply {
    odata::write_conditions(&headers, job_entity(&app, &headers, &job)).await?;
    let v: Value = serde_json::from_str(text(&body)?).map_err(|e| ApiError::invalid(e.to_string()))?;
    let given = v
        .get("disableTasks")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("disableTasks: required (requeue, terminate or wait)".to_string()))?;
    let tasks = DisableTasks::parse(given)
        .ok_or_else(|| ApiError::invalid(format!("disableTasks {given:?}: use requeue, terminate or wait")))?;
    app.store.disable_job(&job, tasks).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn enable_job(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    odata::write_conditions(&headers, job_entity(&app, &headers, &job)).await?;
    actions::enable_job(&app.publisher, &app.store, &job).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn task_counts(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    let counts = app.store.task_counts(&job).await?;
    let mut body = serde_json::to_value(counts).unwrap_or_default();
    body["odata.metadata"] = json!(format!("{}/$metadata#taskcountsresult/@Element", base(&app, &headers)));
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

/// Adds tasks to a job as one submission (all or none).
async fn submit(app: &App, job: &str, tasks: &[TaskAddParameter]) -> drover_core::Result<()> {
    let mut submission = drover_core::submit::Submission {
        store: &app.store,
        publisher: &app.publisher,
        job_id: job,
        continue_on_error: false,
        progress: &|_| {},
    };
    submission.add(tasks).await.map(|_| ())
}

async fn add_task(Extension(app): Shared, headers: HeaderMap, Path(job): Path<String>, body: Bytes) -> Reply {
    let task: TaskAddParameter = read("TaskAddParameter", &body)?;
    if app.store.task_record(&job, &task.id).await.is_ok() {
        return Err(drover_core::Error::Conflict { kind: "task", id: task.id }.into());
    }
    submit(&app, &job, std::slice::from_ref(&task)).await?;
    Ok(created(&base(&app, &headers), &format!("/jobs/{job}/tasks/{}", task.id)))
}

/// Azure's `addtaskcollection`: up to 100 tasks, each answered on its own.
async fn add_task_collection(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(job): Path<String>,
    body: Bytes,
) -> Reply {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The request body is too large",
        ));
    }
    let collection: Value = serde_json::from_str(text(&body)?).map_err(|e| ApiError::invalid(e.to_string()))?;
    let items = collection
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("value: a list of tasks is required"))?;
    if items.len() > COLLECTION_TASKS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!("at most {COLLECTION_TASKS} tasks in one request"),
        ));
    }
    app.store.get_job(&job).await?;
    let base = base(&app, &headers);
    let mut results: Vec<Value> = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, TaskAddParameter)> = Vec::new();
    let ids: Vec<&str> = items.iter().filter_map(|t| t.get("id").and_then(Value::as_str)).collect();
    let existing = app.store.existing_tasks(&job, &ids).await?;
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        let read = lenient::read_checked::<TaskAddParameter>("TaskAddParameter", &item.to_string(), None)
            .map_err(ApiError::invalid)
            .and_then(|(t, _)| t.validate().map(|()| t).map_err(ApiError::from));
        match read {
            Ok(t) if existing.contains(&t.id.as_str()) => {
                results.push(failed(&id, drover_core::Error::Conflict { kind: "task", id: id.clone() }.into()))
            }
            Ok(t) if valid.iter().any(|(_, v)| v.id == t.id) => {
                results.push(failed(&id, ApiError::invalid(format!("task {id:?} appears more than once"))))
            }
            Ok(t) => {
                valid.push((i, t));
                results.push(Value::Null);
            }
            Err(e) => results.push(failed(&id, e)),
        }
    }
    let tasks: Vec<TaskAddParameter> = valid.iter().map(|(_, t)| t.clone()).collect();
    let outcome = if tasks.is_empty() { Ok(()) } else { submit(&app, &job, &tasks).await.map_err(ApiError::from) };
    for (i, t) in &valid {
        results[*i] = match &outcome {
            Ok(()) => {
                let shown = app.store.get_task(&job, &t.id).await.map(|c| serde_json::to_value(c).unwrap_or_default());
                let tag = shown.as_ref().map(reply::etag).unwrap_or_default();
                json!({"status": "success", "taskId": t.id, "eTag": tag,
                       "lastModified": drover_core::model::rfc3339(drover_core::model::now_ms()),
                       "location": format!("{base}/jobs/{job}/tasks/{}", t.id)})
            }
            Err(e) => failed(&t.id, e.clone()),
        };
    }
    let body = json!({"odata.metadata": format!("{base}/$metadata#taskaddresult"), "value": results});
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

fn failed(id: &str, e: ApiError) -> Value {
    json!({"status": if e.status.is_server_error() { "servererror" } else { "clienterror" }, "taskId": id, "error": e.body()})
}

async fn list_tasks(
    Extension(app): Shared,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let size = page_size(&q)?;
    let from: usize = match q.get("$skiptoken") {
        Some(t) => {
            t.parse().map_err(|_| ApiError::invalid(format!("$skiptoken {t:?} is not one this service gave")))?
        }
        None => 0,
    };
    let filter = q.get("$filter").map(|f| odata::Filter::parse(f)).transpose()?;
    let mut tasks = Vec::new();
    let mut next = None;
    app.store
        .for_each_task_from(&job, None, from, |index, shown| {
            let mut task = serde_json::to_value(&shown).unwrap_or_default();
            expand(&q, &mut task, || {
                let url = format!("{}/jobs/{}/tasks/{}", base(&app, &headers), encode(&job), encode(&shown.spec.id));
                (shown.statistics(), url)
            });
            if filter.as_ref().is_some_and(|f| !f.matches(&task)) {
                return ControlFlow::Continue(());
            }
            if tasks.len() == size {
                next = Some(index);
                return ControlFlow::Break(());
            }
            tasks.push(odata::select(task, q.get("$select")));
            ControlFlow::Continue(())
        })
        .await?;
    let base = base(&app, &headers);
    let mut body = json!({"odata.metadata": format!("{base}/$metadata#tasks"), "value": tasks});
    if let Some(next) = next {
        body["odata.nextLink"] = json!(link(&base, &format!("/jobs/{job}/tasks"), &q, &next.to_string()));
    }
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}

async fn get_task(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((job, task)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let shown = app.store.get_task(&job, &task).await?;
    let base = base(&app, &headers);
    let mut body = entity(&base, "tasks", serde_json::to_value(&shown).unwrap_or_default());
    let url = format!("{base}/jobs/{}/tasks/{}", encode(&job), encode(&task));
    expand(&q, &mut body, || (shown.statistics(), url));
    read_entity(&headers, &q, body)
}

/// Azure's task update: its constraints.
async fn task_entity(app: &App, headers: &HeaderMap, job: &str, task: &str) -> Result<Value, ApiError> {
    let shown = app.store.get_task(job, task).await?;
    Ok(entity(&base(app, headers), "tasks", serde_json::to_value(&shown).unwrap_or_default()))
}

async fn update_task(
    Extension(app): Shared,
    headers: HeaderMap,
    Path((job, task)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    odata::write_conditions(&headers, task_entity(&app, &headers, &job, &task)).await?;
    actions::update_task(&app.store, &job, &task, &object(&body)?).await?;
    Ok(StatusCode::OK.into_response())
}

/// A task's file (GET, HEAD for its properties, DELETE).
async fn task_file(
    Extension(app): Shared,
    method: Method,
    headers: HeaderMap,
    Path((job, task, path)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    if method == Method::DELETE {
        let recursive = q.get("recursive").is_some_and(|r| r == "true");
        actions::delete_task_file(&app.staging, &app.store, &job, &task, &path, recursive).await?;
        return Ok(StatusCode::OK.into_response());
    }
    let read = actions::task_file(&app.staging, &app.store, &job, &task, &path, range(&headers)).await;
    let url = format!("{}/jobs/{}/tasks/{}/files/{path}", base(&app, &headers), encode(&job), encode(&task));
    file_response(method, read, url)
}

/// A node's file (GET, HEAD for its properties, DELETE).
async fn node_file(
    Extension(app): Shared,
    method: Method,
    headers: HeaderMap,
    Path((pool, node, path)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let files = actions::node_files(&app.store, &pool, &node).await?;
    if method == Method::DELETE {
        files.remove(&path, q.get("recursive").is_some_and(|r| r == "true")).await?;
        return Ok(StatusCode::OK.into_response());
    }
    let read = if method == Method::HEAD {
        // Properties only (a directory has them too): nothing is read.
        files.stat(&path).await.map(|entry| {
            let length = if entry.is_directory { 0 } else { entry.size };
            FileRead { entry, start: 0, length, body: Box::new(tokio::io::empty()) }
        })
    } else {
        files.read(&path, range(&headers)).await
    };
    let url = format!("{}/pools/{}/nodes/{}/files/{path}", base(&app, &headers), encode(&pool), encode(&node));
    file_response(method, read, url)
}

/// The range a read asks for: `ocp-range` (Azure's), or `Range`.
fn range(headers: &HeaderMap) -> Option<&str> {
    headers.get("ocp-range").or_else(|| headers.get("range")).and_then(|v| v.to_str().ok())
}

/// A file read as Azure answers it: its properties in headers, its content unless HEAD (a
/// ranged read answers 200 too).
fn file_response(method: Method, read: drover_core::Result<FileRead>, url: String) -> Reply {
    let read = match read {
        Err(drover_core::Error::Invalid(why)) if why.starts_with("range ") => {
            return Err(ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", why));
        }
        other => other?,
    };
    let mut out = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/octet-stream".to_string()),
        ("content-length", read.length.to_string()),
        ("ocp-batch-file-isdirectory", read.entry.is_directory.to_string()),
        ("ocp-batch-file-url", url),
        ("ocp-batch-file-mode", read.entry.mode.clone()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.insert(name, v);
        }
    }
    for (name, ms) in [("ocp-creation-time", read.entry.changed_ms), ("last-modified", read.entry.modified_ms)] {
        if let Some(v) = reply::http_date(&rfc3339(ms)) {
            out.insert(name, v);
        }
    }
    if method == Method::HEAD {
        return Ok((StatusCode::OK, out).into_response());
    }
    let stream = tokio_util::io::ReaderStream::new(read.body);
    Ok((StatusCode::OK, out, Body::from_stream(stream)).into_response())
}

/// One entity read: the conditional headers decide, then `$select` picks.
fn read_entity(headers: &HeaderMap, q: &HashMap<String, String>, body: Value) -> Reply {
    odata::conditions(headers, &body, true)?;
    Ok(ok_entity(odata::select(body, q.get("$select"))))
}

/// A HEAD answers as GET without the body.
fn head_or(method: Method, response: Response) -> Response {
    if method != Method::HEAD {
        return response;
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

fn page_size(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("maxresults").or_else(|| q.get("maxResults")) {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RESULTS).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("maxresults {n:?}: from 1 to {MAX_RESULTS}"))),
        None => Ok(MAX_RESULTS),
    }
}

/// The link to the next page: the same request from `token` on.
fn link(base: &str, path: &str, q: &HashMap<String, String>, token: &str) -> String {
    let mut params: Vec<(&str, &str)> =
        q.iter().filter(|(k, _)| k.as_str() != "$skiptoken").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    params.push(("$skiptoken", token));
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    format!("{base}{path}?{}", query.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page of `items` (id, entity), sorted by id, after `$skiptoken` (the last id of the previous page).
fn page(
    app: &App,
    headers: &HeaderMap,
    set: &str,
    path: &str,
    q: &HashMap<String, String>,
    mut items: Vec<(String, Value)>,
) -> Reply {
    let size = page_size(q)?;
    if let Some(filter) = q.get("$filter").map(|f| odata::Filter::parse(f)).transpose()? {
        items.retain(|(_, v)| filter.matches(v));
    }
    for (_, v) in items.iter_mut() {
        *v = odata::select(std::mem::take(v), q.get("$select"));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let after = q.get("$skiptoken");
    let rest: Vec<(String, Value)> = items.into_iter().filter(|(id, _)| after.is_none_or(|a| id > a)).collect();
    let base = base(app, headers);
    let more = rest.len() > size;
    let shown: Vec<(String, Value)> = rest.into_iter().take(size).collect();
    let mut body = json!({"odata.metadata": format!("{base}/$metadata#{set}"),
                          "value": shown.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()});
    if let (true, Some((last, _))) = (more, shown.last()) {
        body["odata.nextLink"] = json!(link(&base, path, q, last));
    }
    Ok(json_response(StatusCode::OK, HeaderMap::new(), body))
}
