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
--@include new_job.lua

return {new_job(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV)}
