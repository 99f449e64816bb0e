--[[ start_task: a node takes a task it received; starts a new attempt unless the task is done,
gone, held, or run by a live node. The caller must not be running the task itself (a node
checks its own running set first).
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] node id         ARGV[2] now (ms)          ARGV[3] node key prefix (drover:A:node:)
ARGV[4] lost-attempt limit                        ARGV[5] job id J   ARGV[6] task id T
ARGV[7] the pool the node serves
Replies:
  {'ok', attempt, spec, exit actions '1'|'0', signature or ''}   a new attempt (preparing
      when the task stages files, else running)
  {'done', outbox...}       already completed (a duplicate message); publish the outbox
  {'poison', lost, outbox...} its node was lost `lost` times: recorded as failed (NodeLostRepeatedly)
  {'gone'}                  no such task or job, or the job is being deleted
  {'otherpool', pool}       the job runs on another pool (a misrouted message)
  {'inactive', job state}   the job ended (a task lost with its node is recorded on the way)
  {'busy', node}            a live node runs the task
  {'waiting'}               its parents have not all completed: their completion releases it
  {'parked'}                the job runs maxParallelTasks already (a finishing task releases it),
                            or is disabled (its enable releases it)
Reads the owner node's heartbeat (ARGV[3]..node..':alive' and ':info'), the one cross-slot read.
]]
-- A heartbeat (every 3 s) written this long after an attempt's last transition lists the task
-- if its node still runs it (node::heartbeat, status::NODE_LEASE / 5).
local BEAT_MARGIN_MS = 5000
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local raw = redis.call('GET', K.task)
if not raw then return {'gone'} end
local jf = redis.call('HMGET', K.job, 'state', 'deps', 'maxPar', 'deadline', 'running', 'pool', 'exitActions')
local jst = jf[1]
if not jst or jst == 'deleting' then return {'gone'} end
if jf[6] ~= ARGV[7] then return {'otherpool', jf[6] or ''} end
local node, now, nodes = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local T = ARGV[6]
local r = load_record(raw)
if r.state == 'completed' then return with_all_outbox({'done'}) end
local from = r.state
local running = from == 'preparing' or from == 'running'
-- Whether the node that owns the attempt still runs it: it heartbeats, and its last heartbeat
-- lists the task or came too soon after the attempt's last transition to list it. A live node
-- that let the attempt go (its outcome lost with a Redis failover) lists it no more.
local function owner_runs(owner)
  if redis.call('EXISTS', nodes .. owner .. ':alive') == 0 then return false end
  local f = redis.call('HMGET', nodes .. owner .. ':info', 'beat', 'tasks')
  if tonumber(f[1] or '0') < (r.stime or 0) + BEAT_MARGIN_MS then return true end
  return string.find(f[2] or '', '["' .. ARGV[5] .. '","' .. T .. '"]', 1, true) ~= nil
end
local owner_alive = running and r.node ~= node and owner_runs(r.node)
-- Holds the task back with its message, once, until what parked it releases it.
local function park()
  local prio = tonumber(redis.call('HGET', K.job, 'prio') or '0')
  if redis.call('HSETNX', K.parkedmsg, T, message(ARGV[5], T, r, prio)) == 1 then
    redis.call('RPUSH', K.parked, T)
  end
  return {'parked'}
end
local deadline = tonumber(jf[4] or '0')
if jst == 'active' and deadline > 0 and now > deadline then
  jst = end_job(now, 'MaxWallClockTimeExpiry')
end
if jst == 'disabled' then
  -- Nothing starts in a disabled job: the task waits, parked, for the job's enable.
  if owner_alive then return {'busy', r.node} end
  return park()
end
if jst ~= 'active' then
  -- A task that was running when its node was lost, in a job that has ended since: no node will
  -- kill and record it, so record it here (else a terminating job would never complete).
  if running and not owner_alive then
    fail_outside(T, r, 'running', now, {category = 'userError', code = 'TaskTerminated',
      message = 'the task was terminated: its job ended while the node running it was lost'}, true)
  end
  return {'inactive', jst}
end
if from == 'active' and jf[2] == '1' then
  if redis.call('HEXISTS', K.wait, T) == 1 or redis.call('HEXISTS', K.blocked, T) == 1 then
    return {'waiting'}
  end
end
if running then
  -- The caller does not run the task itself, so an attempt recorded under its own id belongs to
  -- an earlier, dead incarnation of the node (a restart under the same id).
  if owner_alive then return {'busy', r.node} end
  -- the node that ran this attempt is gone: take the task over, unless its nodes keep dying
  r.requeue = (r.requeue or 0) + 1
  r.lost = (r.lost or 0) + 1
  count(K.stats, 'requeues', 1)
  if r.lost >= tonumber(ARGV[4]) then
    fail_outside(T, r, 'running', now, {category = 'serverError', code = 'NodeLostRepeatedly',
      message = 'the node running the task was lost ' .. r.lost .. ' times (a poison task?); it is not run again'}, true)
    return with_outbox({'poison', tostring(r.lost)})
  end
elseif tonumber(jf[3] or '0') > 0 and tonumber(jf[5] or '0') >= tonumber(jf[3]) then
  return park()
end
if from == 'active' then
  observe(K.stats, 'wait', now - (r.stime or now))
  count(K.job, 'wait', now - (r.stime or now))
  redis.call('ZREM', K.queued, T)
end
r.attempt = (r.attempt or 0) + 1
r.prev = from
if r.stg == 1 then r.state = 'preparing' else r.state = 'running'; r.start = now end
r.stime = now
r.node = node
r['end'] = nil
r.exit = nil
r.result = nil
r.fail = nil
store_record(K.task, r)
if from == 'active' then move(K.job, 'active', 'running', r.slots or 1) end
return {'ok', tostring(r.attempt), r.spec, jf[7] or '0', r.sig or ''}
