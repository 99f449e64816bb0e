--[[ create_schedule: records a job schedule.
KEYS[1] schedule (drover:A:schedule:S)   KEYS[2] the account's schedules (drover:A:schedules)
ARGV[1] schedule id   ARGV[2] spec JSON   ARGV[3] now (ms)   ARGV[4] when its first job is due (ms)
Replies: {'ok'}; {'dup'}
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', 'active', 'ctime', ARGV[3], 'runs', '0', 'next', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok'}
