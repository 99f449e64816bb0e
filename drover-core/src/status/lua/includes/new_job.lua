--[[ Adding an active job to a pool, shared by create_job and run_schedule. `a` holds create_job's
ARGV (see its header); kjob, kjobs, kpool, kpooljobs: the job hash, the account's jobs, the pool
record, the pool's active jobs. Returns 'ok', 'nopool' or 'dup' (nothing written but for 'ok'). ]]
local function new_job(kjob, kjobs, kpool, kpooljobs, a)
  if redis.call('EXISTS', kpool) == 0 then return 'nopool' end
  if redis.call('EXISTS', kjob) == 1 then return 'dup' end
  redis.call('HSET', kjob, 'spec', a[2], 'state', 'active', 'ctime', a[3], 'stime', a[3],
    'maxRetry', a[4], 'pool', a[5], 'exitActions', a[6],
    'deps', a[7], 'onAll', a[8], 'maxPar', a[9], 'prio', a[10], 'deadline', a[11],
    'id', a[1], 'sig', a[12], 'jm', a[13],
    'active', 0, 'running', 0, 'completed', 0, 'succeeded', 0, 'failed', 0,
    's.active', 0, 's.running', 0, 's.completed', 0, 's.succeeded', 0, 's.failed', 0)
  redis.call('SADD', kjobs, a[1])
  redis.call('SADD', kpooljobs, a[1])
  return 'ok'
end
