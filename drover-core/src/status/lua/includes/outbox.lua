--[[ The outbox: the messages of tasks a transition made runnable, kept under K.out (and listed in
K.outboxes, by when it was first written) until the caller has published them with confirms
and cleared it (queue::Publisher::publish_outbox). A caller that died in between leaves them
to the nodes' sweep of old outboxes (status::StatusStore::stale_outboxes). ]]

-- The message that runs task T (whose record is `r`) of job J with priority `prio`; the same
-- JSON as model::TaskMessage.
local function message(J, T, r, prio)
  local m = {v = 1, jobId = J, taskId = T, stage = (r.stg == 1)}
  if prio ~= 0 then m.priority = prio end
  if (r.slots or 1) ~= 1 then m.slots = r.slots end
  if r.msig then m.sig = r.msig end
  return cjson.encode(m)
end

-- Whether this transition put a message in the outbox.
local emitted = false

-- Puts messages in this transition's outbox: the caller publishes them, then clears the outbox.
-- The outbox is listed once per transition (a batch emits many).
local function emit(...)
  redis.call('RPUSH', K.out, ...)
  if emitted then return end
  emitted = true
  local t = redis.call('TIME')
  redis.call('ZADD', K.outboxes, 'NX', t[1] * 1000 + math.floor(t[2] / 1000), K.out)
end

-- A reply followed by the outbox's messages. No unpack(): a task may release more dependents
-- than Lua can unpack.
local function with_all_outbox(reply)
  for _, e in ipairs(redis.call('LRANGE', K.out, 0, -1)) do reply[#reply + 1] = e end
  return reply
end

-- The same after a transition that may have emitted: the outbox is read only if it did (an
-- outbox an earlier transition left is published by the nodes' sweep of stale outboxes).
local function with_outbox(reply)
  if not emitted then return reply end
  return with_all_outbox(reply)
end

