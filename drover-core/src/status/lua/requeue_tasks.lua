--[[ requeue_tasks: puts the messages of a job's tasks that are active and runnable in an
outbox, for an operator who decides they should run again (`drover job requeue`, `drover
dead-letter replay`, a node's sweep of stranded tasks). Idempotent: a task whose message is
still queued gets a second one, and start_task starts it once. Tasks waiting on parents, blocked
by one or parked by maxParallelTasks are left to what releases them. A task requeued counts as
queued from now (the sweep of stranded tasks waits again before it requeues it again).
KEYS[1] job                drover:{A:J}:job         hash
KEYS[2] waiting on parents drover:{A:J}:wait        hash task -> parents awaited
KEYS[3] blocked by parent  drover:{A:J}:blocked     hash task -> parent
KEYS[4] parked messages    drover:{A:J}:parkedmsg   hash task -> message
KEYS[5] this outbox        drover:{A:J}:out:@<tag>  list of messages to publish
KEYS[6] the job's outboxes drover:{A:J}:outboxes    zset outbox key -> since (ms)
KEYS[7] queued tasks       drover:{A:J}:queued      zset task -> since (ms)
KEYS[8..] the records of the tasks named in ARGV[3..], in that order: drover:{A:J}:t:T
ARGV[1] job id J   ARGV[2] '1': only signed tasks (the account signs: workers refuse the others)
ARGV[3..] task ids
Replies: {'ok', outbox...}; {'nojob'}; {'jobstate', state} when the job is not active.
]]
local K = {job = KEYS[1], wait = KEYS[2], blocked = KEYS[3], parkedmsg = KEYS[4], out = KEYS[5], outboxes = KEYS[6],
  queued = KEYS[7]}
--@include outbox.lua
--@include record.lua

local state = redis.call('HGET', K.job, 'state')
if not state then return {'nojob'} end
if state ~= 'active' then return {'jobstate', state} end
local J = ARGV[1]
local prio = tonumber(redis.call('HGET', K.job, 'prio') or '0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local signed_only = ARGV[2] == '1'
for i = 3, #ARGV do
  local T = ARGV[i]
  local raw = redis.call('GET', KEYS[i + 5])
  if raw then
    local r = load_record(raw)
    if r.state == 'active' and (r.msig or not signed_only) and redis.call('HEXISTS', K.wait, T) == 0 and redis.call('HEXISTS', K.blocked, T) == 0
        and redis.call('HEXISTS', K.parkedmsg, T) == 0 then
      emit(message(J, T, r, prio))
      redis.call('ZADD', K.queued, now, T)
    end
  end
end
return with_outbox({'ok'})
