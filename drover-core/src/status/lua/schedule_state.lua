--[[ schedule_state: disables, enables or terminates a job schedule.
KEYS[1] schedule (drover:A:schedule:S)
ARGV[1] the new state   ARGV[2] the states it may come from, comma-separated   ARGV[3] now (ms)
Replies: {'ok'}; {'nosched'}; {'state', current} when it is in none of ARGV[2]
]]
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'nosched'} end
if not string.find(',' .. ARGV[2] .. ',', ',' .. st .. ',', 1, true) then return {'state', st} end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[1] == 'completed' then redis.call('HSET', KEYS[1], 'next', '', 'end', ARGV[3]) end
return {'ok'}
