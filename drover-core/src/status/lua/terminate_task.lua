--[[ terminate_task: `drover task terminate`. An active task (queued, waiting or parked) is
completed at once; one running on a live node is marked for that node to kill and record.
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] now (ms)   ARGV[2] task id T   ARGV[3] node key prefix (drover:A:node:)
ARGV[4] failureInfo JSON   ARGV[5] blocks dependents '1'|'0'
Replies:
  {'ok', outbox...}   terminated now: publish the outbox (released dependents)
  {'killing', node}   the live node running it will kill it
  {'completed'}       it had completed already
  {'notask'}          no such task
Reads the running node's heartbeat (ARGV[3]..node..':alive'), the one cross-slot read.
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local raw = redis.call('GET', K.task)
if not raw then return {'notask'} end
local now, T = tonumber(ARGV[1]), ARGV[2]
local r = load_record(raw)
if r.state == 'completed' then return {'completed'} end
local from = 'active'
if r.state == 'preparing' or r.state == 'running' then
  if redis.call('EXISTS', ARGV[3] .. r.node .. ':alive') == 1 then
    redis.call('SADD', K.killed, T)
    return {'killing', r.node}
  end
  from = 'running'
else
  redis.call('HDEL', K.wait, T)
  redis.call('HDEL', K.blocked, T)
  if redis.call('HDEL', K.parkedmsg, T) == 1 then redis.call('LREM', K.parked, 0, T) end
end
fail_outside(T, r, from, now, cjson.decode(ARGV[4]), ARGV[5] == '1')
return with_outbox({'ok'})
