--[[ create_job: adds an active job to a pool.
KEYS[1] job (drover:{A:J}:job)   KEYS[2] the account's jobs (drover:A:jobs)
KEYS[3] pool (drover:A:pool:P)   KEYS[4] the pool's active jobs (drover:A:pool:P:jobs)
ARGV[1] job id    ARGV[2] spec JSON   ARGV[3] now (ms)
ARGV[4] the job's maxTaskRetryCount   ARGV[5] pool id
ARGV[6] exit actions '1'|'0' (onTaskFailure is performExitOptionsJobAction)
ARGV[7] uses dependencies '1'|'0'     ARGV[8] terminate when all tasks complete '1'|'0'
ARGV[9] maxParallelTasks (0: unlimited)   ARGV[10] priority   ARGV[11] deadline ms (0: none)
ARGV[12] the spec's signature ('' when the account does not sign)
ARGV[13] the job manager task's id when the job ends with it (killJobOnCompletion), else ''

Replies: {'ok'}; {'nopool'}; {'dup'}
Spans the account (cross-slot: see ARCHITECTURE.md).
]]
if redis.call('EXISTS', KEYS[3]) == 0 then return {'nopool'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'state', 'active', 'ctime', ARGV[3], 'stime', ARGV[3],
  'maxRetry', ARGV[4], 'pool', ARGV[5], 'exitActions', ARGV[6],
  'deps', ARGV[7], 'onAll', ARGV[8], 'maxPar', ARGV[9], 'prio', ARGV[10], 'deadline', ARGV[11],
  'id', ARGV[1], 'sig', ARGV[12], 'jm', ARGV[13],
  'active', 0, 'running', 0, 'completed', 0, 'succeeded', 0, 'failed', 0,
  's.active', 0, 's.running', 0, 's.completed', 0, 's.succeeded', 0, 's.failed', 0)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return {'ok'}
