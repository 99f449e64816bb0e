--[[ Counters: a job's task counts by state (moved with the task, so they always add up) and
the pool's monotonic statistics for the monitor. BUCKETS must equal status::BUCKETS_MS (a
unit test compares them). ]]
local BUCKETS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000,
  600000, 1800000, 3600000}

-- Moves one task of `slots` slots between the job's state counters (`from` or `to` may be nil).
-- `s.<state>` counts the slots beyond one of each task in the state: most tasks take one slot,
-- and move no slot counter (the slots in a state are `<state> + s.<state>`).
local function move(job, from, to, slots)
  local extra = slots - 1
  if from then
    redis.call('HINCRBY', job, from, -1)
    if extra ~= 0 then redis.call('HINCRBY', job, 's.' .. from, -extra) end
  end
  if to then
    redis.call('HINCRBY', job, to, 1)
    if extra ~= 0 then redis.call('HINCRBY', job, 's.' .. to, extra) end
  end
end

-- Adds `ms` to histogram `name` of the statistics hash `key` (its count is the sum of its
-- buckets).
local function observe(key, name, ms)
  if not ms or ms < 0 then return end
  local i = #BUCKETS + 1
  for b = 1, #BUCKETS do
    if ms <= BUCKETS[b] then i = b; break end
  end
  redis.call('HINCRBY', key, name .. '.b' .. i, 1)
  redis.call('HINCRBY', key, name .. '.sum', math.floor(ms))
end

-- Adds `n` to counter `name` of the statistics hash `key`.
local function count(key, name, n)
  if n and n ~= 0 then redis.call('HINCRBY', key, name, n) end
end
