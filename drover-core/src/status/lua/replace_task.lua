--[[ replace_task: replaces a task's record with one made from it (Azure's task update: its
constraints), if the record is still the one the change was made from (else 'stale': read it
again and redo the change).
KEYS[1] task record (drover:{A:J}:t:T)
ARGV[1] the record the change was made from   ARGV[2] the new record
Replies: {'ok'}; {'notask'}; {'stale'}
]]
local current = redis.call('GET', KEYS[1])
if not current then return {'notask'} end
if current ~= ARGV[1] then return {'stale'} end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok'}
