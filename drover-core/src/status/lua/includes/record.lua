--[[ A task record as the transition scripts store it: MessagePack, its times (stime, start,
end) relative to ctime and, once completed, without what a completion implies (end = stime,
prev 'running', result 'success'). A record stored as JSON (a submitter's, or one from before
this format) reads as it is. status::TaskRecord::decode reads both. ]]
local RELATIVE = {'stime', 'start', 'end'}

-- The record stored as `raw`, with absolute times and every field.
local function load_record(raw)
  if string.byte(raw, 1) == 123 then return cjson.decode(raw) end -- '{': JSON
  local r = cmsgpack.unpack(raw)
  for _, k in ipairs(RELATIVE) do
    if r[k] then r[k] = r[k] + r.ctime end
  end
  if r.state == 'completed' then
    if r['end'] == nil then r['end'] = r.stime end
    if r.prev == nil then r.prev = 'running' end
    if r.result == nil then r.result = 'success' end
  end
  return r
end

-- Stores record `r` (as `load_record` returns it) at `key`.
local function store_record(key, r)
  local s = {}
  for k, v in pairs(r) do
    if v ~= cjson.null then s[k] = v end
  end
  for _, k in ipairs(RELATIVE) do
    if s[k] then s[k] = s[k] - s.ctime end
  end
  if s.state == 'completed' then
    if s['end'] == s.stime then s['end'] = nil end
    if s.prev == 'running' then s.prev = nil end
    if s.result == 'success' then s.result = nil end
  end
  redis.call('SET', key, cmsgpack.pack(s))
end
