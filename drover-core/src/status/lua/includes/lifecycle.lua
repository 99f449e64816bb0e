--[[ What a task's transition does to the rest of its job: dependents, parked tasks, the job's
end. Needs K and jp (includes/task_keys.lua), counters.lua, outbox.lua and record.lua. ]]

-- A task of the job left the running states: one parked task (maxParallelTasks) may start unless
-- the job is disabled, and
-- a terminating job whose last running task ended is completed.
-- `known`, when given, holds the job's maxParallelTasks, state and running count as they are now
-- (what a caller read already); else they are read.
local function freed(now, known)
  local f = known or redis.call('HMGET', K.job, 'maxPar', 'state', 'running')
  if tonumber(f[1] or '0') > 0 and f[2] ~= 'disabled' then
    local id = redis.call('LPOP', K.parked)
    if id then
      local e = redis.call('HGET', K.parkedmsg, id)
      redis.call('HDEL', K.parkedmsg, id)
      if e then emit(e) end
    end
  end
  if f[2] == 'terminating' and tonumber(f[3]) <= 0 then
    redis.call('HSET', K.job, 'state', 'completed', 'stime', now, 'end', now)
  end
end

-- Parent T completed: each task waiting on it is blocked, or has one parent fewer to wait for
-- and is released (into the outbox) when that was the last. Runs once per parent, in the
-- script that completes it, so a redelivered parent releases nothing twice. O(dependents of T).
local function release(T, blocks, now)
  local dl = jp .. 'dep:' .. T
  for _, e in ipairs(redis.call('LRANGE', dl, 0, -1)) do
    local C = cjson.decode(e).taskId
    if redis.call('HEXISTS', K.wait, C) == 1 then
      if blocks then
        redis.call('HDEL', K.wait, C)
        redis.call('HSET', K.blocked, C, T)
      elseif redis.call('HINCRBY', K.wait, C, -1) <= 0 then
        redis.call('HDEL', K.wait, C)
        emit(e)
        redis.call('ZADD', K.queued, now, C)
      end
    end
  end
  redis.call('DEL', dl)
  redis.call('SREM', K.parents, T)
end

-- Ends an active job: `completed`, or `terminating` while tasks of it still run (their nodes
-- kill them; the last one to end completes the job). Returns the new state.
local function end_job(now, reason)
  local st = 'completed'
  if tonumber(redis.call('HGET', K.job, 'running') or '0') > 0 then st = 'terminating' end
  redis.call('HSET', K.job, 'state', st, 'stime', now, 'reason', reason)
  redis.call('SREM', K.pooljobs, redis.call('HGET', K.job, 'id'))
  if st == 'completed' then redis.call('HSET', K.job, 'end', now) end
  return st
end

-- Task T (its record `r`) reached `completed` (exactly once) from `from` ('active' or
-- 'running'): count it, release its dependents, free its slot, and end the job if it is the
-- job manager that ends it (killJobOnCompletion) or onAllTasksComplete says so.
local function finish(T, from, r, success, blocks, now)
  local slots = r.slots or 1
  -- One read of what the rest needs, taken before the counters move.
  local f = redis.call('HMGET', K.job, 'deps', 'maxPar', 'state', 'onAll', 'jm', 'active', 'running')
  move(K.job, from, 'completed', slots)
  local res = 'failed'
  if success then res = 'succeeded' end
  redis.call('HINCRBY', K.job, res, 1)
  if slots ~= 1 then redis.call('HINCRBY', K.job, 's.' .. res, slots - 1) end
  if success then
    redis.call('HINCRBY', K.stats, 'done.success', 1)
  else
    redis.call('HINCRBY', K.stats, 'done.failure.' .. ((r.fail and r.fail.code) or 'Unknown'), 1)
  end
  if from ~= 'active' and r.start then
    observe(K.stats, 'dur', now - r.start)
    redis.call('HINCRBY', K.job, 'wall', now - r.start)
  end
  if from == 'active' then redis.call('ZREM', K.queued, T) end
  redis.call('SREM', K.killed, T)
  if f[1] == '1' then release(T, blocks, now) end
  local active, running = tonumber(f[6] or '0'), tonumber(f[7] or '0')
  if from == 'active' then active = active - 1 else running = running - 1 end
  if from ~= 'active' then freed(now, {f[2], f[3], running}) end
  if f[3] ~= 'active' then return end
  if f[5] == T then
    end_job(now, 'JMComplete')
  elseif f[4] == '1' and active <= 0 and running <= 0 then
    end_job(now, 'AllTasksComplete')
  end
end

-- Records task T (record `r`, now in `from`) as completed with `failure`, outside any attempt
-- (terminated, or lost with its node): a new attempt number fences out the one that ran.
local function fail_outside(T, r, from, now, failure, blocks)
  r.prev = r.state
  r.state = 'completed'
  r.attempt = (r.attempt or 0) + 1
  r.stime = now
  r['end'] = now
  r.result = 'failure'
  r.fail = failure
  if blocks then r.dblk = 1 end
  store_record(K.task, r)
  finish(T, from, r, false, blocks, now)
end

-- The task's record if attempt `attempt` (ARGV text) owns it in one of `states`, else nil.
local function owned(attempt, states)
  local raw = redis.call('GET', K.task)
  if not raw then return nil end
  local r = load_record(raw)
  if r.attempt ~= tonumber(attempt) or not states[r.state] then return nil end
  return r
end

-- Task T (record `r`, running) is active again: counted, queued, and its message in the outbox.
local function back_to_active(J, T, r, now)
  r.state = 'active'
  store_record(K.task, r)
  move(K.job, 'running', 'active', r.slots or 1)
  redis.call('ZADD', K.queued, now, T)
  emit(message(J, T, r, tonumber(redis.call('HGET', K.job, 'prio') or '0')))
  freed(now)
end
