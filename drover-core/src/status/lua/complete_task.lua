--[[ complete_task: an attempt ended; record its outcome once.
KEYS: the task transition keys (includes/task_keys.lua)
ARGV[1] attempt     ARGV[2] now (ms)     ARGV[3] exit code ('' if none)
ARGV[4] result 'success'|'failure'       ARGV[5] failureInfo JSON ('' if none)
ARGV[6] retryable '1'|'0'                ARGV[7] blocks dependents '1'|'0'
ARGV[8] job id J    ARGV[9] task id T    ARGV[10] bytes staged in   ARGV[11] bytes staged out
Replies:
  {'completed', outbox...}       completed for good: publish the outbox (released tasks)
  {'retry', retryCount, outbox...} active again; the outbox holds the task's own message
  {'stale'}                      another attempt owns the task; nothing was recorded
]]
--@include task_keys.lua
--@include counters.lua
--@include outbox.lua
--@include record.lua
--@include lifecycle.lua

local r = owned(ARGV[1], {preparing = true, running = true})
if not r then return {'stale'} end
local now, J, T = tonumber(ARGV[2]), ARGV[8], ARGV[9]
r.prev = r.state
r.stime = now
r.exit = tonumber(ARGV[3])
if ARGV[5] ~= '' then r.fail = cjson.decode(ARGV[5]) else r.fail = nil end
r['end'] = now
r.result = ARGV[4]
count(K.stats, 'bytes.in', tonumber(ARGV[10]))
count(K.stats, 'bytes.out', tonumber(ARGV[11]))
local max = r.maxRetry or 0
if ARGV[4] == 'failure' and ARGV[6] == '1' and (max < 0 or (r.retry or 0) < max) then
  r.retry = (r.retry or 0) + 1
  count(K.stats, 'retries', 1)
  count(K.job, 'retries', 1)
  back_to_active(J, T, r, now)
  return with_outbox({'retry', tostring(r.retry)})
end
r.state = 'completed'
if ARGV[7] == '1' then r.dblk = 1 end
store_record(K.task, r)
finish(T, 'running', r, ARGV[4] == 'success', ARGV[7] == '1', now)
return with_outbox({'completed'})
