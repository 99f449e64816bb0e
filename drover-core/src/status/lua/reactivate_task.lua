--[[ reactivate_task: Azure's task reactivate. A task that completed with a failure is active
again with its retry count reset, queued, and its message in the outbox. Its dependents keep
what its completion did to them (released or blocked).
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] now (ms)   ARGV[2] job id J   ARGV[3] task id T
Replies: {'ok', outbox...}; {'notask'}; {'jobstate', state} when the job is not active;
  {'state', state} when the task has not completed; {'succeeded'} when it did not fail
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua

local raw = redis.call('GET', K.task)
if not raw then return {'notask'} end
local f = redis.call('HMGET', K.job, 'state', 'prio')
if f[1] ~= 'active' then return {'jobstate', f[1] or 'gone'} end
local now, J, T = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local r = load_record(raw)
if r.state ~= 'completed' then return {'state', r.state} end
if r.result ~= 'failure' then return {'succeeded'} end
local slots = r.slots or 1
move(K.job, 'completed', 'active', slots)
redis.call('HINCRBY', K.job, 'failed', -1)
redis.call('HINCRBY', K.job, 's.failed', 1 - slots)
r.prev = 'completed'
r.state = 'active'
r.stime = now
r.retry = nil
r.result = nil
r.fail = nil
r.exit = nil
r['end'] = nil
r.dblk = nil
store_record(K.task, r)
redis.call('ZADD', K.queued, now, T)
emit(message(J, T, r, tonumber(f[2] or '0')))
return with_outbox({'ok'})
