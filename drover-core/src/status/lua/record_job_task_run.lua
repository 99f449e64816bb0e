--[[ record_job_task_run: records a node's job preparation or release run in the job's
per-node status, unless the job is gone.
KEYS[1] job (drover:{A:J}:job)   KEYS[2] its nodes (drover:{A:J}:nodes, hash node -> JSON)
ARGV[1] node id   ARGV[2] pool id   ARGV[3] which run ('jobPreparationTaskExecutionInfo'|...)
ARGV[4] the run's JSON
Replies: {'ok'} recorded; {'nojob'} the job is gone
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nojob'} end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local v = cur and cjson.decode(cur) or {poolId = ARGV[2], nodeId = ARGV[1]}
v[ARGV[3]] = cjson.decode(ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(v))
return {'ok'}
