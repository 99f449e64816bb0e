--[[ The keys every task transition is given, in this order (status::JobKeys::task_transition).
Every one of a job's keys shares the hash tag {A:J}; `jp`, the job's key prefix
`drover:{A:J}:`, is KEYS[2] without its trailing `job`. Keys a script derives from an id it
reads (another task's record `jp..'t:'..id`, a parent's dependents `jp..'dep:'..id`) use that
prefix, so they hash to the same slot.
KEYS[1]  task record            drover:{A:J}:t:T        string (includes/record.lua)
KEYS[2]  job                    drover:{A:J}:job        hash
KEYS[3]  queued tasks           drover:{A:J}:queued     zset task -> since (ms)
KEYS[4]  waiting on parents     drover:{A:J}:wait       hash task -> parents awaited
KEYS[5]  blocked by a parent    drover:{A:J}:blocked    hash task -> parent
KEYS[6]  parents with waiters   drover:{A:J}:parents    set
KEYS[7]  parked (maxParallel)   drover:{A:J}:parked     list of task ids
KEYS[8]  parked messages        drover:{A:J}:parkedmsg  hash task -> message
KEYS[9]  tasks to kill          drover:{A:J}:killed     set
KEYS[10] T's outbox             drover:{A:J}:out:T      list of messages to publish
KEYS[11] the job's outboxes     drover:{A:J}:outboxes   zset outbox key -> since (ms), not yet cleared
KEYS[12] pool statistics        drover:A:pool:P:stats   hash (cross-slot: see ARCHITECTURE.md)
KEYS[13] the pool's active jobs drover:A:pool:P:jobs    set  (cross-slot: see ARCHITECTURE.md)
]]
local K = {
  task = KEYS[1], job = KEYS[2], queued = KEYS[3], wait = KEYS[4], blocked = KEYS[5],
  parents = KEYS[6], parked = KEYS[7], parkedmsg = KEYS[8], killed = KEYS[9], out = KEYS[10],
  outboxes = KEYS[11], stats = KEYS[12], pooljobs = KEYS[13],
}
local jp = string.sub(KEYS[2], 1, -4)
