--[[ terminate_job: ends an active job; no task of it starts again, and nodes kill the ones
that run (the last to end completes the job).
KEYS[1] job (drover:{A:J}:job)   KEYS[2] the pool's active jobs (drover:A:pool:P:jobs, cross-slot)
ARGV[1] now (ms)   ARGV[2] terminate reason
Replies: {'ok', 'terminating'|'completed'}; {'nojob'}; {'state', state} when it was not active
]]
local K = {job = KEYS[1], pooljobs = KEYS[2]}
local jp = string.sub(KEYS[1], 1, -4)
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local st = redis.call('HGET', K.job, 'state')
if not st then return {'nojob'} end
if st ~= 'active' and st ~= 'disabled' then return {'state', st} end
return {'ok', end_job(ARGV[1], ARGV[2])}
