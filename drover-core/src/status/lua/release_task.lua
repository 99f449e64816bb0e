--[[ release_task: a leaving node hands a started attempt back; the task is active again with
requeueCount + 1 and its own message in the outbox.
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] attempt   ARGV[2] now (ms)   ARGV[3] job id J   ARGV[4] task id T
Replies: {'ok', outbox...}; {'stale'} when another attempt owns the task.
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include lifecycle.lua

local raw = redis.call('GET', K.task)
if not raw then return {'stale'} end
local r = cjson.decode(raw)
if r.attempt ~= tonumber(ARGV[1]) or (r.state ~= 'preparing' and r.state ~= 'running') then
  return {'stale'}
end
local now, J, T = tonumber(ARGV[2]), ARGV[3], ARGV[4]
r.prev = r.state
r.state = 'active'
r.stime = now
r.requeue = (r.requeue or 0) + 1
redis.call('SET', K.task, cjson.encode(r))
move(K.job, 'running', 'active', r.slots or 1)
count(K.stats, 'requeues', 1)
redis.call('ZADD', K.queued, now, T)
emit(message(J, T, r, tonumber(redis.call('HGET', K.job, 'prio') or '0')))
freed(now)
return with_outbox({'ok'})
