//! Every task and job state transition, each one Lua script run atomically by Redis.
//!
//! A task record is one string key holding JSON (decoded with Redis's cjson). Its `attempt` is the
//! fencing token: `start_task` bumps it, and every later transition names the attempt it belongs
//! to, so a stale worker's write is refused. Job counters live in the job hash and move in the same
//! script as the task, so task counts are O(1) and always add up.

use redis::Script;
use std::sync::LazyLock;

/// Shared Lua helpers, prepended to every script.
const PRELUDE: &str = r#"
local function move(job, from, to, slots)
  if from then
    redis.call('HINCRBY', job, from, -1)
    redis.call('HINCRBY', job, 's.' .. from, -slots)
  end
  if to then
    redis.call('HINCRBY', job, to, 1)
    redis.call('HINCRBY', job, 's.' .. to, slots)
  end
end
"#;

/// A transition script and its source (for `SCRIPT LOAD`, so pipelines can use `EVALSHA`).
pub(super) struct Lua {
    pub(super) source: String,
    pub(super) script: Script,
}

fn script(body: &str) -> Lua {
    let source = format!("{PRELUDE}\n{body}");
    Lua { script: Script::new(&source), source }
}

/// KEYS: job, job task list, task keys...; ARGV: (id, record, slots) per task.
/// Adds every task or none: `{'ok', n}`, `{'nojob'}`, `{'jobstate', state}`, `{'dup', id}`.
pub(super) static CREATE_TASKS: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local job, list = KEYS[1], KEYS[2]
local st = redis.call('HGET', job, 'state')
if not st then return {'nojob'} end
if st ~= 'active' then return {'jobstate', st} end
local n = #KEYS - 2
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then return {'dup', ARGV[3 * i - 2]} end
end
local slots = 0
for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[3 * i - 1])
  redis.call('RPUSH', list, ARGV[3 * i - 2])
  slots = slots + tonumber(ARGV[3 * i])
end
redis.call('HINCRBY', job, 'active', n)
redis.call('HINCRBY', job, 's.active', slots)
return {'ok', tostring(n)}
"#,
    )
});

/// KEYS: task, job; ARGV: node, now, stage (1|0), node key prefix, lost-attempt limit.
/// The caller must not be running the task itself (a node checks its own running set first).
/// Starts a new attempt: `{'ok', attempt, spec, job env, exit actions}`; or `{'gone'}` (no such task or job),
/// `{'done'}` (already completed), `{'inactive', job state}`, `{'busy', node}` (a live node runs it),
/// `{'poison', n}` (the task's node was lost n times: recorded as failed instead of run again).
pub(super) static START_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'gone'} end
local jst = redis.call('HGET', KEYS[2], 'state')
if not jst or jst == 'deleting' then return {'gone'} end
local r = cjson.decode(raw)
if r.state == 'completed' then return {'done'} end
if jst ~= 'active' then return {'inactive', jst} end
local node, now = ARGV[1], tonumber(ARGV[2])
local from = r.state
if from == 'preparing' or from == 'running' then
  -- The caller checked that it does not run the task itself, so an attempt recorded under its
  -- own id belongs to an earlier, dead incarnation of the node (a restart under the same id).
  if r.node ~= node and redis.call('EXISTS', ARGV[4] .. r.node .. ':alive') == 1 then
    return {'busy', r.node}
  end
  -- the node that ran this attempt is gone: take the task over, unless its nodes keep dying
  r.requeue = (r.requeue or 0) + 1
  r.lost = (r.lost or 0) + 1
  if r.lost >= tonumber(ARGV[5]) then
    r.prev = from
    r.state = 'completed'
    r.stime = now
    r['end'] = now
    r.result = 'failure'
    r.fail = {category = 'serverError', code = 'NodeLostRepeatedly',
      message = 'the node running the task was lost ' .. r.lost .. ' times (a poison task?); it is not run again'}
    redis.call('SET', KEYS[1], cjson.encode(r))
    move(KEYS[2], 'running', 'completed', r.slots or 1)
    redis.call('HINCRBY', KEYS[2], 'failed', 1)
    redis.call('HINCRBY', KEYS[2], 's.failed', r.slots or 1)
    return {'poison', tostring(r.lost)}
  end
end
r.attempt = (r.attempt or 0) + 1
r.prev = from
if ARGV[3] == '1' then r.state = 'preparing' else r.state = 'running'; r.start = now end
r.stime = now
r.node = node
r['end'] = nil
r.exit = nil
r.result = nil
r.fail = nil
redis.call('SET', KEYS[1], cjson.encode(r))
if from == 'active' then move(KEYS[2], 'active', 'running', r.slots or 1) end
local job = redis.call('HMGET', KEYS[2], 'env', 'exitActions')
return {'ok', tostring(r.attempt), r.spec, job[1] or '', job[2] or '0'}
"#,
    )
});

/// KEYS: task; ARGV: attempt, now. preparing -> running: `{'ok'}` or `{'stale'}`.
pub(super) static RUN_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or r.state ~= 'preparing' then return {'stale'} end
r.prev = 'preparing'
r.state = 'running'
r.stime = tonumber(ARGV[2])
r.start = r.stime
redis.call('SET', KEYS[1], cjson.encode(r))
return {'ok'}
"#,
    )
});

/// KEYS: task, job; ARGV: attempt, now, exit code ('' if none), result, failure JSON ('' if none),
/// retryable (1|0). Ends the attempt: `{'completed'}`, `{'retry', retryCount}` (back to active;
/// the caller publishes it again), or `{'stale'}` (a newer attempt owns the task).
pub(super) static COMPLETE_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or (r.state ~= 'preparing' and r.state ~= 'running') then
  return {'stale'}
end
local now = tonumber(ARGV[2])
local slots = r.slots or 1
r.prev = r.state
r.stime = now
r.exit = tonumber(ARGV[3])
if ARGV[5] ~= '' then r.fail = cjson.decode(ARGV[5]) else r.fail = nil end
local max = r.maxRetry or 0
if ARGV[4] == 'failure' and ARGV[6] == '1' and (max < 0 or (r.retry or 0) < max) then
  r.retry = (r.retry or 0) + 1
  r.state = 'active'
  r['end'] = now
  r.result = ARGV[4]
  redis.call('SET', KEYS[1], cjson.encode(r))
  move(KEYS[2], 'running', 'active', slots)
  return {'retry', tostring(r.retry)}
end
r.state = 'completed'
r['end'] = now
r.result = ARGV[4]
redis.call('SET', KEYS[1], cjson.encode(r))
move(KEYS[2], 'running', 'completed', slots)
if ARGV[4] == 'success' then
  redis.call('HINCRBY', KEYS[2], 'succeeded', 1)
  redis.call('HINCRBY', KEYS[2], 's.succeeded', slots)
else
  redis.call('HINCRBY', KEYS[2], 'failed', 1)
  redis.call('HINCRBY', KEYS[2], 's.failed', slots)
end
return {'completed'}
"#,
    )
});

/// KEYS: task, job; ARGV: attempt, now. Hands a started attempt back (a draining node):
/// back to active with requeueCount + 1: `{'ok'}` or `{'stale'}`.
pub(super) static RELEASE_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or (r.state ~= 'preparing' and r.state ~= 'running') then
  return {'stale'}
end
r.prev = r.state
r.state = 'active'
r.stime = tonumber(ARGV[2])
r.requeue = (r.requeue or 0) + 1
redis.call('SET', KEYS[1], cjson.encode(r))
move(KEYS[2], 'running', 'active', r.slots or 1)
return {'ok'}
"#,
    )
});

/// Every script, for loading them once at connect time (so pipelines can use EVALSHA).
pub(super) fn all() -> [&'static Lua; 7] {
    [&CREATE_TASKS, &START_TASK, &RUN_TASK, &COMPLETE_TASK, &RELEASE_TASK, &CREATE_JOB, &TERMINATE_JOB]
}

/// KEYS: job, jobs set, pool; ARGV: job id, spec, now, env JSON, job max retry, pool id,
/// exit actions (1 when onTaskFailure is performExitOptionsJobAction).
/// `{'ok'}`, `{'nopool'}` or `{'dup'}`.
pub(super) static CREATE_JOB: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[3]) == 0 then return {'nopool'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', 'active', 'ctime', ARGV[3], 'stime', ARGV[3],
  'env', ARGV[4], 'maxRetry', ARGV[5], 'pool', ARGV[6], 'exitActions', ARGV[7],
  'active', 0, 'running', 0, 'completed', 0, 'succeeded', 0, 'failed', 0,
  's.active', 0, 's.running', 0, 's.completed', 0, 's.succeeded', 0, 's.failed', 0)
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok'}
"#,
    )
});

/// KEYS: job; ARGV: now, reason. An active job becomes completed (no task of it starts again):
/// `{'ok'}`, `{'nojob'}` or `{'state', state}` when it was not active.
pub(super) static TERMINATE_JOB: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'nojob'} end
if st ~= 'active' and st ~= 'disabled' then return {'state', st} end
redis.call('HSET', KEYS[1], 'state', 'completed', 'stime', ARGV[1], 'end', ARGV[1], 'reason', ARGV[2])
return {'ok'}
"#,
    )
});
