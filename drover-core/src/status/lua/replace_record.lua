--[[ replace_record: replaces a JSON record with one made from it, if the record is still the one
the change was made from (else 'stale': read it again and redo the change). Azure's task update
(its constraints) and every pool change (resize, autoscale, patch, update properties).
KEYS[1] the record (drover:{A:J}:t:T, drover:A:pool:P)
ARGV[1] the record the change was made from   ARGV[2] the new record
Replies: {'ok'}; {'gone'}; {'stale'}
]]
local current = redis.call('GET', KEYS[1])
if not current then return {'gone'} end
if current ~= ARGV[1] then return {'stale'} end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok'}
