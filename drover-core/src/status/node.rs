//! Node records: joining and leaving a pool, heartbeats that carry a node's state and the tasks
//! it runs, and listing a pool's nodes. A node writes its own record; readers derive `offline`
//! from a lapsed heartbeat.

use super::{StatusStore, NODE_LEASE};
use crate::model::node::{
    ComputeNode, NodeAgentInformation, NodeOrder, NodeState, StartTaskInformation, TaskInformation, TasksOption,
};
use crate::model::{now_ms, rfc3339, TaskState};
use crate::{Error, Result};
use std::collections::HashMap;

/// Who joins a pool.
#[derive(Debug, Clone)]
pub struct NodeJoin<'a> {
    pub pool: &'a str,
    pub node: &'a str,
    pub host: &'a str,
    pub slots: u32,
    pub version: &'a str,
    pub work_dir: &'a str,
    /// Whether an actuator starts it again when it exits to restart (a reboot can be ordered).
    pub restartable: bool,
    /// Where it serves its files, if it does.
    pub files: Option<&'a FileService>,
}

/// Where a node serves its files (`node::files`), and the key requests to it are signed with:
/// kept apart from the node's record, so no listing ever shows the key.
#[derive(Clone)]
pub struct FileService {
    pub url: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").field("url", &self.url).finish_non_exhaustive()
    }
}

/// What a heartbeat reads back: what the node is told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeatReply {
    /// Its scheduling is disabled, and what it does with its running tasks.
    pub disabled: Option<TasksOption>,
    /// It is to leave, or restart.
    pub order: Option<NodeOrder>,
}

/// What a node reports with each heartbeat.
#[derive(Debug, Clone)]
pub struct NodeBeat {
    pub state: NodeState,
    /// When it entered that state (ms).
    pub since: i64,
    /// The (job, task) pairs it runs.
    pub tasks: Vec<(String, String)>,
    /// The (job, task) pairs whose attempts ended here last, oldest first.
    pub recent: Vec<(String, String)>,
    pub used_slots: u32,
    pub total_run: u64,
    pub total_succeeded: u64,
}

impl StatusStore {
    /// Registers a node in its pool (state `starting`) and starts its heartbeat; returns how many
    /// joins the pool has seen, this one included (a packing node's rank).
    pub async fn join_pool(&self, join: &NodeJoin<'_>) -> Result<u64> {
        let now = now_ms();
        let info = self.keys.node_part(join.node, "info");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.keys.node_info(join.node))
            .arg(join.work_dir)
            .ignore()
            .cmd("DEL")
            .arg(&info)
            .arg(self.keys.node_part(join.node, "order"))
            .arg(self.keys.node_part(join.node, "files"))
            .ignore()
            .cmd("HSET")
            .arg(&info)
            .arg(&[
                ("pool", join.pool.to_string()),
                ("host", join.host.to_string()),
                ("slots", join.slots.to_string()),
                ("version", join.version.to_string()),
                ("state", NodeState::Starting.as_str().to_string()),
                ("stime", now.to_string()),
                ("joined", now.to_string()),
                ("restartable", u8::from(join.restartable).to_string()),
            ])
            .ignore()
            .cmd("SADD")
            .arg(self.keys.pool_part(join.pool, "nodes"))
            .arg(join.node)
            .ignore()
            .cmd("SET")
            .arg(self.keys.node_alive(join.node))
            .arg(now)
            .arg("PX")
            .arg(NODE_LEASE.as_millis() as u64)
            .ignore()
            .cmd("INCR")
            .arg(self.keys.pool_part(join.pool, "joins"));
        if let Some(files) = join.files {
            let fields = [("url", files.url.clone()), ("key", base64_key(&files.key))];
            pipe.cmd("HSET").arg(self.keys.node_part(join.node, "files")).arg(&fields).ignore();
        }
        let (joins,): (u64,) = pipe.query_async(&mut self.con()).await?;
        Ok(joins)
    }

    /// Disables (`Some(option)`) or enables (`None`) scheduling on a node of `pool`: the node
    /// reads it with its next heartbeat and stops or resumes taking tasks.
    pub async fn set_node_scheduling(&self, pool: &str, node: &str, disable: Option<TasksOption>) -> Result<()> {
        let member: Option<String> =
            redis::cmd("HGET").arg(self.keys.node_part(node, "info")).arg("pool").query_async(&mut self.con()).await?;
        if member.as_deref() != Some(pool) {
            return Err(Error::NotFound { kind: "node", id: node.into() });
        }
        let key = self.keys.node_part(node, "sched");
        let _: () = match disable {
            Some(option) => redis::cmd("SET").arg(key).arg(option.as_str()).query_async(&mut self.con()).await?,
            None => redis::cmd("DEL").arg(key).query_async(&mut self.con()).await?,
        };
        Ok(())
    }

    /// Orders a node of `pool` to leave it, or to restart (refused for a node no actuator
    /// restarts); the node carries it out when its next heartbeat reads it.
    pub async fn order_node(&self, pool: &str, node: &str, order: NodeOrder) -> Result<()> {
        let (member, restartable): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.node_part(node, "info"))
            .arg("pool")
            .arg("restartable")
            .query_async(&mut self.con())
            .await?;
        if member.as_deref() != Some(pool) {
            return Err(Error::NotFound { kind: "node", id: node.into() });
        }
        if matches!(order, NodeOrder::Reboot(_)) && restartable.as_deref() != Some("1") {
            return Err(Error::State(format!(
                "node {node:?} was started by hand, not by drover-monitor's actuator or systemd: nothing would start it again after a reboot"
            )));
        }
        let _: () = redis::cmd("SET")
            .arg(self.keys.node_part(node, "order"))
            .arg(order.to_text())
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Forgets `node`'s order (the node is carrying it out).
    pub async fn clear_node_order(&self, node: &str) -> Result<()> {
        let _: () = redis::cmd("DEL").arg(self.keys.node_part(node, "order")).query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Renews a node's heartbeat and records its state and running tasks (one round trip);
    /// returns what the node is told.
    pub async fn node_beat(&self, node: &str, beat: &NodeBeat) -> Result<BeatReply> {
        let pairs = |list: &[(String, String)]| {
            let list: Vec<[&str; 2]> = list.iter().map(|(j, t)| [j.as_str(), t.as_str()]).collect();
            serde_json::to_string(&list).unwrap_or_default()
        };
        let (disabled, order): (Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.node_alive(node))
            .arg(now_ms())
            .arg("PX")
            .arg(NODE_LEASE.as_millis() as u64)
            .ignore()
            .cmd("HSET")
            .arg(self.keys.node_part(node, "info"))
            .arg(&[
                ("state", beat.state.as_str().to_string()),
                ("stime", beat.since.to_string()),
                ("beat", now_ms().to_string()),
                ("tasks", pairs(&beat.tasks)),
                ("recent", pairs(&beat.recent)),
                ("used", beat.used_slots.to_string()),
                ("run", beat.total_run.to_string()),
                ("ok", beat.total_succeeded.to_string()),
            ])
            .ignore()
            .cmd("GET")
            .arg(self.keys.node_part(node, "sched"))
            .cmd("GET")
            .arg(self.keys.node_part(node, "order"))
            .query_async(&mut self.con())
            .await?;
        Ok(BeatReply {
            disabled: disabled.as_deref().and_then(TasksOption::parse),
            order: order.as_deref().and_then(NodeOrder::parse),
        })
    }

    /// Records how the pool's start task ran on `node`.
    pub async fn record_start_task(&self, node: &str, info: &StartTaskInformation) -> Result<()> {
        let _: () = redis::cmd("HSET")
            .arg(self.keys.node_part(node, "info"))
            .arg("startTask")
            .arg(serde_json::to_string(info).unwrap_or_default())
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Remembers that `node` ran the preparation of `job` (its release runs there later).
    pub async fn add_node_job(&self, node: &str, job: &str) -> Result<()> {
        let _: () =
            redis::cmd("SADD").arg(self.keys.node_part(node, "jobs")).arg(job).query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Forgets a job `node` prepared (its release ran, or it is gone).
    pub async fn remove_node_job(&self, node: &str, job: &str) -> Result<()> {
        let _: () =
            redis::cmd("SREM").arg(self.keys.node_part(node, "jobs")).arg(job).query_async(&mut self.con()).await?;
        Ok(())
    }

    /// The jobs `node` prepared whose release has not run yet.
    pub async fn node_jobs(&self, node: &str) -> Result<Vec<String>> {
        Ok(redis::cmd("SMEMBERS").arg(self.keys.node_part(node, "jobs")).query_async(&mut self.con()).await?)
    }

    /// Removes a node that left its pool cleanly. The jobs it prepared stay recorded: the same
    /// node coming back (a restart) still runs their release.
    pub async fn leave_pool(&self, pool: &str, node: &str) -> Result<()> {
        let _: () = redis::pipe()
            .atomic()
            .cmd("SREM")
            .arg(self.keys.pool_part(pool, "nodes"))
            .arg(node)
            .ignore()
            .cmd("DEL")
            .arg(self.keys.node_part(node, "info"))
            .arg(self.keys.node_alive(node))
            .arg(self.keys.node_part(node, "sched"))
            .arg(self.keys.node_part(node, "order"))
            .arg(self.keys.node_part(node, "files"))
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Where the live node `node` of `pool` serves its files; None if it serves none.
    pub async fn node_file_service(&self, pool: &str, node: &str) -> Result<Option<FileService>> {
        let (member, alive, url, key): (Option<String>, bool, Option<String>, Option<String>) = redis::pipe()
            .cmd("HGET")
            .arg(self.keys.node_part(node, "info"))
            .arg("pool")
            .cmd("EXISTS")
            .arg(self.keys.node_alive(node))
            .cmd("HGET")
            .arg(self.keys.node_part(node, "files"))
            .arg("url")
            .cmd("HGET")
            .arg(self.keys.node_part(node, "files"))
            .arg("key")
            .query_async(&mut self.con())
            .await?;
        if member.as_deref() != Some(pool) {
            return Err(Error::NotFound { kind: "node", id: node.into() });
        }
        use base64::Engine;
        let key = key.and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok());
        Ok(match (alive, url, key) {
            (true, Some(url), Some(key)) => Some(FileService { url, key }),
            _ => None,
        })
    }

    /// The nodes of a pool, sorted by id (one round trip for all of them).
    pub async fn list_nodes(&self, pool: &str) -> Result<Vec<ComputeNode>> {
        let mut ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.pool_part(pool, "nodes")).query_async(&mut self.con()).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.node_part(id, "info")).cmd("EXISTS").arg(self.keys.node_alive(id));
            pipe.cmd("EXISTS").arg(self.keys.node_part(id, "sched"));
            pipe.cmd("GET").arg(self.keys.node_part(id, "order"));
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.con()).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, four) in ids.iter().zip(replies.chunks(4)) {
            let (Some(info), Some(alive), Some(off), Some(order)) =
                (four.first(), four.get(1), four.get(2), four.get(3))
            else {
                continue;
            };
            let info: HashMap<String, String> = redis::from_redis_value(info.clone())
                .map_err(|e| Error::Corrupt(format!("node {id:?}: unreadable record: {e}")))?;
            let alive: bool = redis::from_redis_value(alive.clone()).unwrap_or(false);
            let off: bool = redis::from_redis_value(off.clone()).unwrap_or(false);
            let order: Option<String> = redis::from_redis_value(order.clone()).unwrap_or(None);
            let told = Told { off, order: order.as_deref().and_then(NodeOrder::parse) };
            if let Some(node) = compute_node(id, pool, &info, alive, told) {
                nodes.push(node);
            }
        }
        Ok(nodes)
    }

    /// One node of a pool.
    pub async fn get_node(&self, pool: &str, node: &str) -> Result<ComputeNode> {
        let (info, alive, off, order): (HashMap<String, String>, bool, bool, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.node_part(node, "info"))
            .cmd("EXISTS")
            .arg(self.keys.node_alive(node))
            .cmd("EXISTS")
            .arg(self.keys.node_part(node, "sched"))
            .cmd("GET")
            .arg(self.keys.node_part(node, "order"))
            .query_async(&mut self.con())
            .await?;
        let told = Told { off, order: order.as_deref().and_then(NodeOrder::parse) };
        compute_node(node, pool, &info, alive, told).ok_or_else(|| Error::NotFound { kind: "node", id: node.into() })
    }
}

fn base64_key(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// What a node has been told, as its readers see it.
struct Told {
    /// Its scheduling is disabled.
    off: bool,
    order: Option<NodeOrder>,
}

/// A node as users see it, from its record; None if it is not (or no longer) in `pool`. A live
/// node whose scheduling is disabled and that runs nothing is `offline`, as in Azure; one told to
/// leave or restart is `leavingPool` or `rebooting` from the order on.
fn compute_node(id: &str, pool: &str, f: &HashMap<String, String>, alive: bool, told: Told) -> Option<ComputeNode> {
    let off = told.off;
    if f.get("pool").map(String::as_str) != Some(pool) {
        return None;
    }
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let stored = f.get("state").and_then(|s| NodeState::parse(s)).unwrap_or(NodeState::Starting);
    let state = match stored {
        _ if !alive => NodeState::Offline,
        _ if matches!(told.order, Some(NodeOrder::Reboot(_))) => NodeState::Rebooting,
        _ if told.order.is_some() => NodeState::LeavingPool,
        NodeState::Idle if off => NodeState::Offline,
        stored => stored,
    };
    let pairs =
        |k: &str| -> Vec<[String; 2]> { f.get(k).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default() };
    let tasks = pairs("tasks");
    let mut recent_tasks: Vec<TaskInformation> = pairs("recent")
        .into_iter()
        .rev()
        .filter(|pair| !tasks.contains(pair))
        .map(|[job_id, task_id]| TaskInformation { job_id, task_id, task_state: TaskState::Completed })
        .collect();
    Some(ComputeNode {
        id: id.to_string(),
        pool_id: pool.to_string(),
        state,
        state_transition_time: rfc3339(if alive { num("stime") } else { num("beat").max(num("stime")) }),
        scheduling_state: if off { "disabled" } else { "enabled" }.to_string(),
        last_boot_time: rfc3339(num("joined")),
        last_heartbeat_time: f.get("beat").map(|_| rfc3339(num("beat"))),
        host_name: f.get("host").cloned().unwrap_or_default(),
        task_slots: num("slots") as u32,
        running_tasks_count: tasks.len() as u32,
        running_task_slots_count: num("used") as u32,
        total_tasks_run: num("run") as u64,
        total_tasks_succeeded: num("ok") as u64,
        recent_tasks: {
            let running = tasks.iter().cloned();
            let mut all: Vec<TaskInformation> = running
                .map(|[job_id, task_id]| TaskInformation { job_id, task_id, task_state: TaskState::Running })
                .collect();
            all.append(&mut recent_tasks);
            all
        },
        start_task_info: f.get("startTask").and_then(|s| serde_json::from_str(s).ok()),
        node_agent_info: NodeAgentInformation { version: f.get("version").cloned().unwrap_or_default() },
    })
}
