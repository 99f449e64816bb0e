--[[ delete_task: Azure's task delete. The record goes and the job's counts with it; its id
stays in the job's task list (so list positions and $skiptoken cursors do not move) and in the
deleted set, which a task added again under the id takes its old place from. A message still
queued for it finds no task and is dropped. A task running on a live node is refused ('running':
terminate it first); so is one that tasks wait on (terminating it releases or blocks them).
KEYS: the task transition keys (includes/task_keys.lua), then
KEYS[14] deleted ids       drover:{A:J}:deleted    set
ARGV[1] now (ms)   ARGV[2] task id T   ARGV[3] node key prefix (drover:A:node:)
Replies: {'ok', outbox...}; {'notask'}; {'running', node}; {'parent'}
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
local running = r.state == 'preparing' or r.state == 'running'
if running and redis.call('EXISTS', ARGV[3] .. r.node .. ':alive') == 1 then return {'running', r.node} end
if r.state ~= 'completed' and redis.call('SISMEMBER', K.parents, T) == 1 then return {'parent'} end
local slots = r.slots or 1
if r.state == 'completed' then
  move(K.job, 'completed', nil, slots)
  local res = 'failed'
  if r.result == 'success' then res = 'succeeded' end
  redis.call('HINCRBY', K.job, res, -1)
  redis.call('HINCRBY', K.job, 's.' .. res, 1 - slots)
elseif running then
  move(K.job, 'running', nil, slots)
else
  move(K.job, 'active', nil, slots)
  redis.call('ZREM', K.queued, T)
  redis.call('HDEL', K.wait, T)
  redis.call('HDEL', K.blocked, T)
  if redis.call('HDEL', K.parkedmsg, T) == 1 then redis.call('LREM', K.parked, 0, T) end
end
redis.call('SREM', K.killed, T)
redis.call('DEL', K.task)
redis.call('SADD', KEYS[14], T)
if running then freed(now) end
local f = redis.call('HMGET', K.job, 'onAll', 'state', 'active', 'running')
if f[2] == 'active' and f[1] == '1' and tonumber(f[3]) <= 0 and tonumber(f[4]) <= 0 then
  end_job(now, 'AllTasksComplete')
end
return with_outbox({'ok'})
