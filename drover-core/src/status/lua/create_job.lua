--[[ create_job: adds an active job to a pool.
KEYS[1] job (drover:{A:J}:job)   KEYS[2] the account's jobs (drover:A:jobs)
KEYS[3] pool (drover:A:pool:P)   KEYS[4] the pool's active jobs (drover:A:pool:P:jobs)
ARGV[1] job id    ARGV[2] spec JSON   ARGV[3] now (ms)   ARGV[4] common environment JSON
ARGV[5] the job's maxTaskRetryCount   ARGV[6] pool id
ARGV[7] exit actions '1'|'0' (onTaskFailure is performExitOptionsJobAction)
ARGV[8] uses dependencies '1'|'0'     ARGV[9] terminate when all tasks complete '1'|'0'
ARGV[10] maxParallelTasks (0: unlimited)   ARGV[11] priority   ARGV[12] deadline ms (0: none)
Replies: {'ok'}; {'nopool'}; {'dup'}
Spans the account (cross-slot: see ARCHITECTURE.md).
]]
if redis.call('EXISTS', KEYS[3]) == 0 then return {'nopool'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', 'active', 'ctime', ARGV[3], 'stime', ARGV[3],
  'env', ARGV[4], 'maxRetry', ARGV[5], 'pool', ARGV[6], 'exitActions', ARGV[7],
  'deps', ARGV[8], 'onAll', ARGV[9], 'maxPar', ARGV[10], 'prio', ARGV[11], 'deadline', ARGV[12],
  'id', ARGV[1],
  'active', 0, 'running', 0, 'completed', 0, 'succeeded', 0, 'failed', 0,
  's.active', 0, 's.running', 0, 's.completed', 0, 's.succeeded', 0, 's.failed', 0)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return {'ok'}
