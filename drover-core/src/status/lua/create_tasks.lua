--[[ create_tasks: adds a batch of tasks to an active job, all of them or none. Tasks whose
parents have all completed (or that have none) go to the outbox; the others wait in
the job's wait (or blocked) hash and are released by their last parent's completion.
KEYS[1] job  KEYS[2] the job's task list  KEYS[3] queued  KEYS[4] wait  KEYS[5] blocked
KEYS[6] parents  KEYS[7] this batch's outbox (drover:{A:J}:out:@<batch>)  KEYS[8] outboxes
KEYS[9] deleted ids (a task added again under one keeps its place in the task list)
KEYS[10..] the record of each task, in ARGV order
ARGV[1] now (ms); then per task: id, record JSON, slots, its message JSON, parent count n,
  then the n parent ids
Replies: {'ok', outbox...}; {'nojob'}; {'jobstate', state}; {'dup', task id}
]]
local K = {
  job = KEYS[1], tasks = KEYS[2], queued = KEYS[3], wait = KEYS[4], blocked = KEYS[5],
  parents = KEYS[6], out = KEYS[7], outboxes = KEYS[8], deleted = KEYS[9],
}
local jp = string.sub(KEYS[1], 1, -4)
--@include outbox.lua
--@include record.lua

local st = redis.call('HGET', K.job, 'state')
if not st then return {'nojob'} end
if st ~= 'active' then return {'jobstate', st} end
local now = tonumber(ARGV[1])
local n = #KEYS - 9
local tasks, c = {}, 2
for i = 1, n do
  local np = tonumber(ARGV[c + 4])
  tasks[i] = {id = ARGV[c], rec = ARGV[c + 1], slots = tonumber(ARGV[c + 2]), msg = ARGV[c + 3], np = np, p0 = c + 5}
  c = c + 5 + np
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[9 + i]) == 1 then return {'dup', tasks[i].id} end
end
-- The task list, the queued set and the outbox are written once per batch, not once per task.
local slots, listed, queued, runnable = 0, {}, {}, {}
local readded = redis.call('EXISTS', K.deleted) == 1
for i = 1, n do
  local t = tasks[i]
  redis.call('SET', KEYS[9 + i], t.rec)
  if not readded or redis.call('SREM', K.deleted, t.id) == 0 then listed[#listed + 1] = t.id end
  slots = slots + t.slots
  local wait, blocker = 0, nil
  for j = t.p0, t.p0 + t.np - 1 do
    local P = ARGV[j]
    local praw = redis.call('GET', jp .. 't:' .. P)
    local pr = praw and load_record(praw)
    if pr and pr.state == 'completed' then
      if pr.dblk and not blocker then blocker = P end
    else
      wait = wait + 1
      redis.call('RPUSH', jp .. 'dep:' .. P, t.msg)
      redis.call('SADD', K.parents, P)
    end
  end
  if blocker then
    redis.call('HSET', K.blocked, t.id, blocker)
  elseif wait > 0 then
    redis.call('HSET', K.wait, t.id, wait)
  else
    queued[#queued + 1] = now
    queued[#queued + 1] = t.id
    runnable[#runnable + 1] = t.msg
  end
end
-- f(...) with the elements of `list` in pieces (unpack has a limit); an even piece keeps pairs.
local function in_pieces(list, f)
  for i = 1, #list, 1000 do f(unpack(list, i, math.min(i + 999, #list))) end
end
in_pieces(listed, function(...) redis.call('RPUSH', K.tasks, ...) end)
in_pieces(queued, function(...) redis.call('ZADD', K.queued, ...) end)
in_pieces(runnable, emit)
redis.call('HINCRBY', K.job, 'active', n)
redis.call('HINCRBY', K.job, 's.active', slots - n)
return with_outbox({'ok'})
