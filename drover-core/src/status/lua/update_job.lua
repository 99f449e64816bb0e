--[[ update_job: replaces an active job's spec and what the other scripts read of it (priority,
max parallel tasks, onAllTasksComplete, retry count for new tasks, deadline), if its spec is
still the one the change was made from (else 'stale': read it again and redo the change).
KEYS[1] job hash (drover:{A:J})
ARGV[1] the spec the change was made from   ARGV[2] the new spec JSON   ARGV[3] its signature ('' unsigned)
ARGV[4] prio   ARGV[5] maxPar (0 = no limit)   ARGV[6] onAll ('1' terminate the job when its tasks complete)
ARGV[7] maxRetry   ARGV[8] deadline (ms, 0 none)
Replies: {'ok'}; {'nojob'}; {'stale'}; {'state', current}
]]
local f = redis.call('HMGET', KEYS[1], 'state', 'spec')
if not f[1] then return {'nojob'} end
if f[1] ~= 'active' then return {'state', f[1]} end
if f[2] ~= ARGV[1] then return {'stale'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'sig', ARGV[3], 'prio', ARGV[4], 'maxPar', ARGV[5],
  'onAll', ARGV[6], 'maxRetry', ARGV[7], 'deadline', ARGV[8])
return {'ok'}
