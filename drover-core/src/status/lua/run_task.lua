--[[ run_task: an attempt has staged its files; preparing -> running.
KEYS: the task transition keys (includes/task_keys.lua); only KEYS[1] is used
ARGV[1] attempt   ARGV[2] now (ms)
Replies: {'ok'}; {'stale'} when another attempt owns the task.
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local r = owned(ARGV[1], {preparing = true})
if not r then return {'stale'} end
r.prev = 'preparing'
r.state = 'running'
r.stime = tonumber(ARGV[2])
r.start = r.stime
store_record(K.task, r)
return {'ok'}
