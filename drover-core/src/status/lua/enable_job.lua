--[[ enable_job: Azure's job enable. The job is active again and the tasks parked while it was
disabled are released into this call's outbox (up to maxParallelTasks, less what runs).
O(tasks released), once.
KEYS[1] job                drover:{A:J}:job         hash
KEYS[2] parked             drover:{A:J}:parked      list of task ids
KEYS[3] parked messages    drover:{A:J}:parkedmsg   hash task -> message
KEYS[4] this outbox        drover:{A:J}:out:@<tag>  list of messages to publish
KEYS[5] the job's outboxes drover:{A:J}:outboxes    zset outbox key -> since (ms)
ARGV[1] now (ms)
Replies: {'ok', outbox...}; {'nojob'}; {'state', state} when it was not disabled
]]
local K = {job = KEYS[1], parked = KEYS[2], parkedmsg = KEYS[3], out = KEYS[4], outboxes = KEYS[5]}
--@include outbox.lua

local f = redis.call('HMGET', K.job, 'state', 'maxPar', 'running')
if not f[1] then return {'nojob'} end
if f[1] ~= 'disabled' then return {'state', f[1]} end
redis.call('HSET', K.job, 'state', 'active', 'stime', ARGV[1])
redis.call('HDEL', K.job, 'disableTasks')
local left = -1
if tonumber(f[2] or '0') > 0 then left = math.max(0, tonumber(f[2]) - tonumber(f[3] or '0')) end
while left ~= 0 do
  local id = redis.call('LPOP', K.parked)
  if not id then break end
  local e = redis.call('HGET', K.parkedmsg, id)
  redis.call('HDEL', K.parkedmsg, id)
  if e then emit(e) end
  left = left - 1
end
return with_outbox({'ok'})
