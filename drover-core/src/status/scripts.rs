//! Every task and job state transition, each one Lua script run atomically by Redis.
//!
//! A task record is one string key holding JSON (decoded with Redis's cjson). Its `attempt` is the
//! fencing token: `start_task` bumps it, and every later transition names the attempt it belongs
//! to, so a stale worker's write is refused. Job counters live in the job hash and move in the same
//! script as the task, so task counts are O(1) and always add up.

use redis::Script;
use std::sync::LazyLock;

/// The upper bounds (ms) of the duration and queue-wait histograms the scripts keep per pool;
/// one more bucket holds what is above the last.
pub const BUCKETS_MS: [u64; 18] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000,
];

/// Shared Lua helpers, prepended to every script. `pfx` is the account's key prefix
/// (`drover:A:`), `J` a job id, `T` a task id; `out` is the list of task messages (JSON) the
/// caller must publish before it acks, because the transition made those tasks runnable.
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

-- The key of the job's pool statistics: monotonic counters for the monitor (completions by
-- result and failure code, retries, requeues, bytes staged, duration and queue-wait histograms).
local function stats(job, pfx)
  local pool = redis.call('HGET', job, 'pool')
  if pool then return pfx .. 'pool:' .. pool .. ':stats' end
  return nil
end

local function observe(key, name, ms)
  if not key or not ms or ms < 0 then return end
  local i = #BUCKETS + 1
  for b = 1, #BUCKETS do
    if ms <= BUCKETS[b] then i = b; break end
  end
  redis.call('HINCRBY', key, name .. '.b' .. i, 1)
  redis.call('HINCRBY', key, name .. '.sum', math.floor(ms))
  redis.call('HINCRBY', key, name .. '.count', 1)
end

local function count(job, pfx, name, n)
  local key = stats(job, pfx)
  if key and n ~= 0 then redis.call('HINCRBY', key, name, n) end
end

-- A task waits in the queue from `since` (ms): the job's queued set gives the oldest one.
local function queued(pfx, J, T, since)
  redis.call('ZADD', pfx .. 'job:' .. J .. ':queued', since, T)
end

-- A task of the job left the running states: one parked task (maxParallelTasks) may start, and
-- a terminating job whose last running task ended is completed.
local function freed(job, pfx, J, out, now)
  if tonumber(redis.call('HGET', job, 'maxPar') or '0') > 0 then
    local p = pfx .. 'job:' .. J .. ':parked'
    local id = redis.call('LPOP', p)
    if id then
      local e = redis.call('HGET', p .. 'msg', id)
      redis.call('HDEL', p .. 'msg', id)
      if e then redis.call('RPUSH', out, e) end
    end
  end
  if redis.call('HGET', job, 'state') == 'terminating' and tonumber(redis.call('HGET', job, 'running')) <= 0 then
    redis.call('HSET', job, 'state', 'completed', 'stime', now, 'end', now)
  end
end

-- Parent T completed: each task waiting on it is blocked, or has one parent fewer to wait for
-- and is released (into `out`) when that was the last. Runs once per parent, in the script that
-- completes it, so a redelivered parent releases nothing twice. O(dependents of T).
local function release(pfx, J, T, blocks, out, now)
  local dl = pfx .. 'dep:' .. J .. ':' .. T
  local wk, bk = pfx .. 'job:' .. J .. ':wait', pfx .. 'job:' .. J .. ':blocked'
  for _, e in ipairs(redis.call('LRANGE', dl, 0, -1)) do
    local C = cjson.decode(e).taskId
    if redis.call('HEXISTS', wk, C) == 1 then
      if blocks then
        redis.call('HDEL', wk, C)
        redis.call('HSET', bk, C, T)
      elseif redis.call('HINCRBY', wk, C, -1) <= 0 then
        redis.call('HDEL', wk, C)
        redis.call('RPUSH', out, e)
        queued(pfx, J, C, now)
      end
    end
  end
  redis.call('DEL', dl)
  redis.call('SREM', pfx .. 'job:' .. J .. ':parents', T)
end

-- Ends an active job: `completed`, or `terminating` while tasks of it still run (their nodes
-- kill them; the last one to end completes the job). Returns the new state.
local function end_job(job, now, reason)
  local st = 'completed'
  if tonumber(redis.call('HGET', job, 'running') or '0') > 0 then st = 'terminating' end
  redis.call('HSET', job, 'state', st, 'stime', now, 'reason', reason)
  local f = redis.call('HMGET', job, 'pj', 'id')
  if f[1] and f[2] then redis.call('SREM', f[1], f[2]) end
  if st == 'completed' then redis.call('HSET', job, 'end', now) end
  return st
end

-- Task T (its record `r`) reached `completed` (exactly once) from `from` ('active' or
-- 'running'): count it, release its dependents, free its slot, and end the job if
-- onAllTasksComplete says so.
local function finish(job, pfx, J, T, from, r, success, blocks, out, now)
  local slots = r.slots or 1
  move(job, from, 'completed', slots)
  local res = 'failed'
  if success then res = 'succeeded' end
  redis.call('HINCRBY', job, res, 1)
  redis.call('HINCRBY', job, 's.' .. res, slots)
  local sk = stats(job, pfx)
  if sk then
    if success then
      redis.call('HINCRBY', sk, 'done.success', 1)
    else
      redis.call('HINCRBY', sk, 'done.failure.' .. ((r.fail and r.fail.code) or 'Unknown'), 1)
    end
    if from ~= 'active' and r.start then observe(sk, 'dur', now - r.start) end
  end
  if from == 'active' then redis.call('ZREM', pfx .. 'job:' .. J .. ':queued', T) end
  redis.call('SREM', pfx .. 'job:' .. J .. ':killed', T)
  if redis.call('HGET', job, 'deps') == '1' then release(pfx, J, T, blocks, out, now) end
  if from ~= 'active' then freed(job, pfx, J, out, now) end
  local f = redis.call('HMGET', job, 'onAll', 'state', 'active', 'running')
  if f[1] == '1' and f[2] == 'active' and tonumber(f[3]) <= 0 and tonumber(f[4]) <= 0 then
    end_job(job, now, 'AllTasksComplete')
  end
end

-- Appends the outbox of T's transition to a reply (the caller publishes it, then clears it).
-- No unpack(): a task may release more dependents than Lua can unpack.
local function with_outbox(reply, out)
  for _, e in ipairs(redis.call('LRANGE', out, 0, -1)) do reply[#reply + 1] = e end
  return reply
end
"#;

/// A transition script and its source (for `SCRIPT LOAD`, so pipelines can use `EVALSHA`).
pub(super) struct Lua {
    pub(super) source: String,
    pub(super) script: Script,
}

fn script(body: &str) -> Lua {
    let buckets = BUCKETS_MS.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let source = format!("local BUCKETS = {{{buckets}}}\n{PRELUDE}\n{body}");
    Lua { script: Script::new(&source), source }
}

/// KEYS: job, job task list, task keys...; ARGV: pfx, J, now, then per task: id, record, slots,
/// its message (JSON, kept for when it is released), parent count, parent ids.... Adds every task or none: `{'ok', n, held ids...}`
/// (held: waiting on, or blocked by, their parents; not to be published), `{'nojob'}`,
/// `{'jobstate', state}`, `{'dup', id}`.
pub(super) static CREATE_TASKS: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local job, list = KEYS[1], KEYS[2]
local st = redis.call('HGET', job, 'state')
if not st then return {'nojob'} end
if st ~= 'active' then return {'jobstate', st} end
local pfx, J, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = #KEYS - 2
local tasks, c = {}, 4
for i = 1, n do
  local np = tonumber(ARGV[c + 4])
  tasks[i] = {id = ARGV[c], rec = ARGV[c + 1], slots = tonumber(ARGV[c + 2]), msg = ARGV[c + 3], np = np, p0 = c + 5}
  c = c + 5 + np
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then return {'dup', tasks[i].id} end
end
local wk, bk = pfx .. 'job:' .. J .. ':wait', pfx .. 'job:' .. J .. ':blocked'
local slots, reply = 0, {'ok', tostring(n)}
for i = 1, n do
  local t = tasks[i]
  redis.call('SET', KEYS[2 + i], t.rec)
  redis.call('RPUSH', list, t.id)
  slots = slots + t.slots
  if t.np > 0 then
    local wait, blocker = 0, nil
    for j = t.p0, t.p0 + t.np - 1 do
      local P = ARGV[j]
      local praw = redis.call('GET', pfx .. 'task:' .. J .. ':' .. P)
      local pr = praw and cjson.decode(praw)
      if pr and pr.state == 'completed' then
        if pr.dblk and not blocker then blocker = P end
      else
        wait = wait + 1
        redis.call('RPUSH', pfx .. 'dep:' .. J .. ':' .. P, t.msg)
        redis.call('SADD', pfx .. 'job:' .. J .. ':parents', P)
      end
    end
    if blocker then
      redis.call('HSET', bk, t.id, blocker)
      reply[#reply + 1] = t.id
    elseif wait > 0 then
      redis.call('HSET', wk, t.id, wait)
      reply[#reply + 1] = t.id
    else
      queued(pfx, J, t.id, now)
    end
  else
    queued(pfx, J, t.id, now)
  end
end
redis.call('HINCRBY', job, 'active', n)
redis.call('HINCRBY', job, 's.active', slots)
return reply
"#,
    )
});

/// KEYS: task, job; ARGV: node, now, stage (1|0), node key prefix, lost-attempt limit, pfx, J, T,
/// the message (JSON, kept if the task is parked).
/// The caller must not be running the task itself (a node checks its own running set first).
/// Starts a new attempt: `{'ok', attempt, spec, job env, exit actions, priority}`; or `{'gone'}`
/// (no such task or job), `{'done', priority, outbox...}` (already completed; publish the outbox),
/// `{'inactive', job state}`, `{'busy', node}` (a live node runs it), `{'waiting'}` (its
/// dependencies are not satisfied: its release publishes it), `{'parked'}` (the job runs
/// maxParallelTasks already: a finishing task publishes it), `{'poison', n, priority, outbox...}`
/// (the task's node was lost n times: recorded as failed instead of run again).
pub(super) static START_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'gone'} end
local job = KEYS[2]
local jf = redis.call('HMGET', job, 'state', 'deps', 'maxPar', 'deadline', 'running', 'prio')
local jst = jf[1]
if not jst or jst == 'deleting' then return {'gone'} end
local node, now = ARGV[1], tonumber(ARGV[2])
local pfx, J, T = ARGV[6], ARGV[7], ARGV[8]
local out = pfx .. 'out:' .. J .. ':' .. T
local prio = jf[6] or '0'
local r = cjson.decode(raw)
if r.state == 'completed' then return with_outbox({'done', prio}, out) end
local deadline = tonumber(jf[4] or '0')
if jst == 'active' and deadline > 0 and now > deadline then
  jst = end_job(job, now, 'MaxWallClockTimeExpiry')
end
local from = r.state
if jst ~= 'active' then
  -- A task that was running when its node was lost, in a job that has ended since: no node will
  -- kill and record it, so record it here (else a terminating job would never complete).
  if (from == 'preparing' or from == 'running')
      and not (r.node ~= node and redis.call('EXISTS', ARGV[4] .. r.node .. ':alive') == 1) then
    r.prev = from
    r.state = 'completed'
    r.attempt = (r.attempt or 0) + 1
    r.stime = now
    r['end'] = now
    r.result = 'failure'
    r.dblk = 1
    r.fail = {category = 'userError', code = 'TaskTerminated',
      message = 'the task was terminated: its job ended while the node running it was lost'}
    redis.call('SET', KEYS[1], cjson.encode(r))
    finish(job, pfx, J, T, 'running', r, false, true, out, now)
  end
  return {'inactive', jst}
end
if from == 'active' and jf[2] == '1' then
  local w = pfx .. 'job:' .. J
  if redis.call('HEXISTS', w .. ':wait', T) == 1 or redis.call('HEXISTS', w .. ':blocked', T) == 1 then
    return {'waiting'}
  end
end
if from == 'preparing' or from == 'running' then
  -- The caller checked that it does not run the task itself, so an attempt recorded under its
  -- own id belongs to an earlier, dead incarnation of the node (a restart under the same id).
  if r.node ~= node and redis.call('EXISTS', ARGV[4] .. r.node .. ':alive') == 1 then
    return {'busy', r.node}
  end
  -- the node that ran this attempt is gone: take the task over, unless its nodes keep dying
  r.requeue = (r.requeue or 0) + 1
  r.lost = (r.lost or 0) + 1
  count(job, pfx, 'requeues', 1)
  if r.lost >= tonumber(ARGV[5]) then
    r.prev = from
    r.state = 'completed'
    r.stime = now
    r['end'] = now
    r.result = 'failure'
    r.dblk = 1
    r.fail = {category = 'serverError', code = 'NodeLostRepeatedly',
      message = 'the node running the task was lost ' .. r.lost .. ' times (a poison task?); it is not run again'}
    redis.call('SET', KEYS[1], cjson.encode(r))
    finish(job, pfx, J, T, 'running', r, false, true, out, now)
    return with_outbox({'poison', tostring(r.lost), prio}, out)
  end
elseif tonumber(jf[3] or '0') > 0 and tonumber(jf[5] or '0') >= tonumber(jf[3]) then
  local p = pfx .. 'job:' .. J .. ':parked'
  if redis.call('HSETNX', p .. 'msg', T, ARGV[9]) == 1 then redis.call('RPUSH', p, T) end
  return {'parked'}
end
if from == 'active' then
  observe(stats(job, pfx), 'wait', now - (r.stime or now))
  redis.call('ZREM', pfx .. 'job:' .. J .. ':queued', T)
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
if from == 'active' then move(job, 'active', 'running', r.slots or 1) end
local j = redis.call('HMGET', job, 'env', 'exitActions')
return {'ok', tostring(r.attempt), r.spec, j[1] or '', j[2] or '0', prio}
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
/// retryable (1|0), blocks dependents (1|0), pfx, J, T, bytes staged in, bytes staged out. Ends
/// the attempt: `{'completed', outbox...}`,
/// `{'retry', retryCount, outbox...}` (back to active; the caller publishes it again), or
/// `{'stale'}` (a newer attempt owns the task).
pub(super) static COMPLETE_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or (r.state ~= 'preparing' and r.state ~= 'running') then
  return {'stale'}
end
local job, now = KEYS[2], tonumber(ARGV[2])
local pfx, J, T = ARGV[8], ARGV[9], ARGV[10]
local out = pfx .. 'out:' .. J .. ':' .. T
local slots = r.slots or 1
r.prev = r.state
r.stime = now
r.exit = tonumber(ARGV[3])
if ARGV[5] ~= '' then r.fail = cjson.decode(ARGV[5]) else r.fail = nil end
r['end'] = now
r.result = ARGV[4]
count(job, pfx, 'bytes.in', tonumber(ARGV[11]) or 0)
count(job, pfx, 'bytes.out', tonumber(ARGV[12]) or 0)
local max = r.maxRetry or 0
if ARGV[4] == 'failure' and ARGV[6] == '1' and (max < 0 or (r.retry or 0) < max) then
  r.retry = (r.retry or 0) + 1
  r.state = 'active'
  redis.call('SET', KEYS[1], cjson.encode(r))
  move(job, 'running', 'active', slots)
  count(job, pfx, 'retries', 1)
  queued(pfx, J, T, now)
  freed(job, pfx, J, out, now)
  return with_outbox({'retry', tostring(r.retry)}, out)
end
r.state = 'completed'
if ARGV[7] == '1' then r.dblk = 1 end
redis.call('SET', KEYS[1], cjson.encode(r))
finish(job, pfx, J, T, 'running', r, ARGV[4] == 'success', ARGV[7] == '1', out, now)
return with_outbox({'completed'}, out)
"#,
    )
});

/// KEYS: task, job; ARGV: attempt, now, pfx, J, T. Hands a started attempt back (a draining node):
/// back to active with requeueCount + 1: `{'ok', outbox...}` or `{'stale'}`.
pub(super) static RELEASE_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or (r.state ~= 'preparing' and r.state ~= 'running') then
  return {'stale'}
end
local pfx, J, T = ARGV[3], ARGV[4], ARGV[5]
local out = pfx .. 'out:' .. J .. ':' .. T
r.prev = r.state
r.state = 'active'
r.stime = tonumber(ARGV[2])
r.requeue = (r.requeue or 0) + 1
redis.call('SET', KEYS[1], cjson.encode(r))
move(KEYS[2], 'running', 'active', r.slots or 1)
count(KEYS[2], pfx, 'requeues', 1)
queued(pfx, J, T, tonumber(ARGV[2]))
freed(KEYS[2], pfx, J, out, ARGV[2])
return with_outbox({'ok'}, out)
"#,
    )
});

/// KEYS: task, job; ARGV: now, pfx, J, T, node key prefix, failure JSON, blocks dependents (1|0).
/// Terminates one task: an active one (queued, waiting or parked) is completed at once,
/// `{'ok', priority, outbox...}`; one running on a live node is marked to be killed by it,
/// `{'killing', node}`; `{'completed'}` when it had ended already, `{'notask'}`.
pub(super) static TERMINATE_TASK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'notask'} end
local job, now = KEYS[2], tonumber(ARGV[1])
local pfx, J, T = ARGV[2], ARGV[3], ARGV[4]
local out = pfx .. 'out:' .. J .. ':' .. T
local r = cjson.decode(raw)
if r.state == 'completed' then return {'completed'} end
local from = 'active'
if r.state == 'preparing' or r.state == 'running' then
  if redis.call('EXISTS', ARGV[5] .. r.node .. ':alive') == 1 then
    redis.call('SADD', pfx .. 'job:' .. J .. ':killed', T)
    return {'killing', r.node}
  end
  from = 'running'
else
  local w = pfx .. 'job:' .. J
  redis.call('HDEL', w .. ':wait', T)
  redis.call('HDEL', w .. ':blocked', T)
  if redis.call('HDEL', w .. ':parkedmsg', T) == 1 then redis.call('LREM', w .. ':parked', 0, T) end
end
r.prev = r.state
r.state = 'completed'
r.attempt = (r.attempt or 0) + 1
r.stime = now
r['end'] = now
r.result = 'failure'
r.fail = cjson.decode(ARGV[6])
if ARGV[7] == '1' then r.dblk = 1 end
redis.call('SET', KEYS[1], cjson.encode(r))
finish(job, pfx, J, T, from, r, false, ARGV[7] == '1', out, now)
return with_outbox({'ok', redis.call('HGET', job, 'prio') or '0'}, out)
"#,
    )
});

/// Every script, for loading them once at connect time (so pipelines can use EVALSHA).
pub(super) fn all() -> [&'static Lua; 8] {
    [&CREATE_TASKS, &START_TASK, &RUN_TASK, &COMPLETE_TASK, &RELEASE_TASK, &TERMINATE_TASK, &CREATE_JOB, &TERMINATE_JOB]
}

/// KEYS: job, jobs set, pool, the pool's set of active jobs; ARGV: job id, spec, now, env JSON, job max retry, pool id,
/// exit actions (1 when onTaskFailure is performExitOptionsJobAction), uses dependencies (1|0),
/// terminate when all tasks complete (1|0), maxParallelTasks (0: unlimited), priority,
/// deadline in ms (0: none). `{'ok'}`, `{'nopool'}` or `{'dup'}`.
pub(super) static CREATE_JOB: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[3]) == 0 then return {'nopool'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', 'active', 'ctime', ARGV[3], 'stime', ARGV[3],
  'env', ARGV[4], 'maxRetry', ARGV[5], 'pool', ARGV[6], 'exitActions', ARGV[7],
  'deps', ARGV[8], 'onAll', ARGV[9], 'maxPar', ARGV[10], 'prio', ARGV[11], 'deadline', ARGV[12],
  'id', ARGV[1], 'pj', KEYS[4],
  'active', 0, 'running', 0, 'completed', 0, 'succeeded', 0, 'failed', 0,
  's.active', 0, 's.running', 0, 's.completed', 0, 's.succeeded', 0, 's.failed', 0)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return {'ok'}
"#,
    )
});

/// KEYS: job; ARGV: now, reason. Ends an active job: no task of it starts again, and nodes kill
/// the ones that run. `{'ok', state}` (terminating while tasks still run, else completed),
/// `{'nojob'}` or `{'state', state}` when it was not active.
pub(super) static TERMINATE_JOB: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'nojob'} end
if st ~= 'active' and st ~= 'disabled' then return {'state', st} end
return {'ok', end_job(KEYS[1], ARGV[1], ARGV[2])}
"#,
    )
});
