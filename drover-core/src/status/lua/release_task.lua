--[[ release_task: a leaving node hands a started attempt back; the task is active again with
requeueCount + 1 and its own message in the outbox.
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] attempt   ARGV[2] now (ms)   ARGV[3] job id J   ARGV[4] task id T
Replies: {'ok', outbox...}; {'stale'} when another attempt owns the task.
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local r = owned(ARGV[1], {preparing = true, running = true})
if not r then return {'stale'} end
local now, J, T = tonumber(ARGV[2]), ARGV[3], ARGV[4]
r.prev = r.state
r.stime = now
r.requeue = (r.requeue or 0) + 1
count(K.stats, 'requeues', 1)
back_to_active(J, T, r, now)
return with_outbox({'ok'})
