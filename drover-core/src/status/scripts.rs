//! The transition scripts: one Lua file each under `status/lua/`, with their shared pieces
//! (`lua/includes/`) pulled in by `--@include NAME` lines, loaded once and run with EVALSHA.
//!
//! A task record is one string key (`lua/includes/record.lua`, [`super::TaskRecord::encode`]).
//! Its `attempt` is the fencing token: `start_task` bumps it, and every later transition names
//! the attempt it belongs to, so a stale worker's write is refused. Job counters live in the job
//! hash and move in the same script as the task, so task counts are O(1) and always add up. Each
//! file's header lists its KEYS, ARGV and replies; the typed argument structs and replies are
//! beside their callers.

use crate::{Error, Result};
use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation};
use std::sync::LazyLock;

/// The upper bounds (ms) of the duration and queue-wait histograms the scripts keep per pool;
/// one more bucket holds what is above the last. `lua/includes/counters.lua` has the same list.
pub const BUCKETS_MS: [u64; 18] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000,
];

/// The shared pieces a script may include.
fn include(name: &str) -> Option<&'static str> {
    Some(match name {
        "task_keys.lua" => include_str!("lua/includes/task_keys.lua"),
        "counters.lua" => include_str!("lua/includes/counters.lua"),
        "outbox.lua" => include_str!("lua/includes/outbox.lua"),
        "lifecycle.lua" => include_str!("lua/includes/lifecycle.lua"),
        "new_job.lua" => include_str!("lua/includes/new_job.lua"),
        "record.lua" => include_str!("lua/includes/record.lua"),
        _ => return None,
    })
}

/// One transition script, assembled from its file and includes.
pub(super) struct Lua {
    name: &'static str,
    source: String,
    script: Script,
    /// For each line of `source`, the file and line it came from (so an error names a line
    /// that can be found).
    origin: Vec<(&'static str, usize)>,
}

impl Lua {
    fn new(name: &'static str, text: &'static str) -> Lua {
        let mut source = String::new();
        let mut origin = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match line.strip_prefix("--@include ").map(str::trim) {
                Some(piece) => {
                    // A missing include is a build defect; the unit test below loads every script.
                    let body = include(piece).unwrap_or("error('missing include')");
                    for (j, l) in body.lines().enumerate() {
                        source.push_str(l);
                        source.push('\n');
                        origin.push((piece, j + 1));
                    }
                }
                None => {
                    source.push_str(line);
                    source.push('\n');
                    origin.push((name, i + 1));
                }
            }
        }
        Lua { name, script: Script::new(&source), source, origin }
    }

    /// The script's assembled source (for `SCRIPT LOAD`).
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// A new invocation, to add keys and arguments to.
    pub(super) fn prepare(&self) -> ScriptInvocation<'_> {
        self.script.prepare_invoke()
    }

    /// Runs `invocation` and splits the reply into its head and the rest. A Lua error comes back
    /// with its lines named in the script's own files.
    pub(super) async fn run(&self, invocation: ScriptInvocation<'_>, con: &mut ConnectionManager) -> Result<Reply> {
        let values: Vec<String> = invocation.invoke_async(con).await.map_err(|e| self.locate(e))?;
        let mut it = values.into_iter();
        let head = it.next().ok_or_else(|| Error::Internal(format!("{}: empty reply", self.name)))?;
        Ok(Reply { script: self.name, head, rest: it.collect() })
    }

    /// Rewrites `user_script:N` in a script error as the file and line it refers to.
    fn locate(&self, e: redis::RedisError) -> Error {
        let text = e.to_string();
        // A replica or a loading server refusing the script is the store's state, not a defect
        // in the script: it stays a (transient) Redis error.
        let e = Error::Redis(e);
        if !text.contains("user_script:") || e.is_transient() {
            return e;
        }
        Error::Internal(format!("script {}: {}", self.name, self.locate_text(&text)))
    }

    fn locate_text(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("user_script:") {
            out.push_str(&rest[..at]);
            let after = &rest[at + "user_script:".len()..];
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            let place = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| self.origin.get(n.wrapping_sub(1)))
                .map(|(file, line)| format!("{file}:{line}"));
            match place {
                Some(p) => out.push_str(&p),
                None => out.push_str(&rest[at..at + "user_script:".len() + digits]),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// A script's reply: its first element, which says what happened, and the values after it.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) script: &'static str,
    pub(super) head: String,
    pub(super) rest: Vec<String>,
}

impl Reply {
    /// The `i`th value after the head.
    pub(super) fn at(&self, i: usize) -> Result<&str> {
        self.rest.get(i).map(String::as_str).ok_or_else(|| self.unexpected())
    }

    /// The `i`th value after the head, as a number.
    pub(super) fn number<T: std::str::FromStr>(&self, i: usize) -> Result<T> {
        self.at(i)?.parse().map_err(|_| self.unexpected())
    }

    /// The values from the `i`th on (an outbox).
    pub(super) fn from(self, i: usize) -> Vec<String> {
        self.rest.into_iter().skip(i).collect()
    }

    /// The error for a reply this build does not know: a defect, never an outcome.
    pub(super) fn unexpected(&self) -> Error {
        Error::Internal(format!("{}: unexpected reply {:?} {:?}", self.script, self.head, self.rest))
    }
}

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(pub(super) static $name: LazyLock<Lua> =
            LazyLock::new(|| Lua::new($file, include_str!(concat!("lua/", $file))));)*
        /// Every script, for loading them once at connect time (so pipelines can use EVALSHA).
        pub(super) fn all() -> Vec<&'static Lua> {
            vec![$(&$name),*]
        }
    };
}

scripts! {
    CREATE_JOB => "create_job.lua",
    CREATE_SCHEDULE => "create_schedule.lua",
    RUN_SCHEDULE => "run_schedule.lua",
    SCHEDULE_STATE => "schedule_state.lua",
    UPDATE_SCHEDULE => "update_schedule.lua",
    UPDATE_JOB => "update_job.lua",
    REPLACE_RECORD => "replace_record.lua",
    TERMINATE_JOB => "terminate_job.lua",
    DISABLE_JOB => "disable_job.lua",
    ENABLE_JOB => "enable_job.lua",
    DELETE_TASK => "delete_task.lua",
    REACTIVATE_TASK => "reactivate_task.lua",
    CREATE_TASKS => "create_tasks.lua",
    START_TASK => "start_task.lua",
    RUN_TASK => "run_task.lua",
    COMPLETE_TASK => "complete_task.lua",
    RELEASE_TASK => "release_task.lua",
    TERMINATE_TASK => "terminate_task.lua",
    REQUEUE_TASKS => "requeue_tasks.lua",
    RECORD_JOB_TASK_RUN => "record_job_task_run.lua",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_include_resolves_and_lines_map_back() {
        for lua in all() {
            assert!(!lua.source.contains("missing include"), "{}", lua.name);
            assert!(!lua.source.contains("--@include"), "{}", lua.name);
            assert_eq!(lua.source.lines().count(), lua.origin.len());
        }
        let start = &START_TASK;
        assert_eq!(start.origin[0], ("start_task.lua", 1));
        let at = start.origin.iter().position(|(f, _)| *f == "lifecycle.lua").unwrap_or(0) + 1;
        let text = format!("ERR user_script:{at}: boom, on @user_script:{at}.");
        assert_eq!(start.locate_text(&text), "ERR lifecycle.lua:1: boom, on @lifecycle.lua:1.");
    }

    #[test]
    fn buckets_match_the_lua_list() {
        let lua = include("counters.lua").unwrap_or_default();
        let list = lua.split("local BUCKETS = {").nth(1).and_then(|s| s.split('}').next()).unwrap_or_default();
        let buckets: Vec<u64> = list.split(',').filter_map(|s| s.trim().parse().ok()).collect();
        assert_eq!(buckets, BUCKETS_MS);
    }
}
