--[[ run_schedule: makes the job a schedule is due for, once, however many schedulers try.
KEYS[1] schedule (drover:A:schedule:S)
KEYS[2..5] the new job's keys, as create_job's KEYS[1..4]
ARGV[1] the schedule's run count as the caller read it (the fence)   ARGV[2] now (ms)
ARGV[3] when the next run is due (ms), or '' when this is the last (the schedule completes)
ARGV[4..16] the new job, as create_job's ARGV[1..13]
Replies: {'ok'} the job was made; {'nopool'} or {'dup'} this run was skipped (its pool is gone,
or its job id is taken); {'stale'} nothing was done: another scheduler ran it, or the schedule
is not active or not due.
Spans the account (cross-slot: see ARCHITECTURE.md).
]]
--@include new_job.lua

local f = redis.call('HMGET', KEYS[1], 'state', 'runs', 'next')
if f[1] ~= 'active' or f[2] ~= ARGV[1] or tonumber(f[3]) > tonumber(ARGV[2]) then return {'stale'} end
local a = {}
for i = 4, 16 do a[i - 3] = ARGV[i] end
local made = new_job(KEYS[2], KEYS[3], KEYS[4], KEYS[5], a)
redis.call('HINCRBY', KEYS[1], 'runs', 1)
if made == 'ok' then redis.call('HSET', KEYS[1], 'recent', a[1]) end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'state', 'completed', 'next', '', 'end', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'next', ARGV[3])
end
return {made}
