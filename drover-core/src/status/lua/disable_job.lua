--[[ disable_job: Azure's job disable. No task of the job starts while it is disabled (a node
that receives one parks it, as for maxParallelTasks); its running tasks are requeued, terminated
or left to finish as ARGV[1] says (the nodes running them read `disableTasks` and act).
KEYS[1] job (drover:{A:J}:job)
ARGV[1] disableTasks: requeue | terminate | wait   ARGV[2] now (ms)
Replies: {'ok'}; {'nojob'}; {'state', state} when it was neither active nor disabled (disabling a
disabled job again changes what it does to running tasks, as in Azure)
]]
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'nojob'} end
if st ~= 'active' and st ~= 'disabled' then return {'state', st} end
redis.call('HSET', KEYS[1], 'state', 'disabled', 'stime', ARGV[2], 'disableTasks', ARGV[1])
return {'ok'}
