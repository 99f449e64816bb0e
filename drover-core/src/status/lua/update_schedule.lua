--[[ update_schedule: replaces a job schedule's schedule, job specification and metadata; jobs it
made stay as they are. One that made no job yet is due as if just created; else the next job is
due when it was or one new interval from now, whichever is first (none without an interval);
never before the new doNotRunUntil.
KEYS[1] schedule (drover:A:schedule:S)
ARGV[1] spec JSON   ARGV[2] doNotRunUntil (ms, 0: none)   ARGV[3] recurrenceInterval (ms, 0: none)
ARGV[4] now (ms)
Replies: {'ok'}; {'nosched'}; {'state', 'completed'}
]]
local f = redis.call('HMGET', KEYS[1], 'state', 'next', 'runs')
if not f[1] then return {'nosched'} end
if f[1] == 'completed' then return {'state', f[1]} end
local floor, now, every = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[3])
local due
if tonumber(f[3] or '0') == 0 then
  due = now
elseif every > 0 then
  due = now + every
  local was = tonumber(f[2] or '')
  if was and was < due then due = was end
end
local next = ''
if due then next = tostring(math.max(due, floor)) end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'next', next)
return {'ok'}
