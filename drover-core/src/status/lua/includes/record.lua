--[[ A task record as it is stored (here, and by status::TaskRecord::encode when it is added):
MARK, then MessagePack with one-letter field names, its times (stime, start, end) relative to
ctime and, once completed, without what a completion implies (end = stime, prev 'running',
result 'success'). A record stored before MARK, as JSON (added by an older submitter) or as
MessagePack with the fields' own names, reads as it is. status::TaskRecord::decode reads all
three; its fields' serde aliases are the one-letter names (a unit test compares them with both
tables below). Each name is written out in a table constructor: a loop over a table of names
cost a Redis call about three microseconds more per record read and stored. ]]

-- A byte MessagePack never uses: a script from before MARK fails on such a record rather than
-- misread it.
local MARK = '\193'

-- The record stored as `raw`, with absolute times and every field.
local function load_record(raw)
  local first = string.byte(raw, 1)
  if first == 123 then return cjson.decode(raw) end -- '{': JSON
  local r
  if first == 193 then -- MARK
    local s = cmsgpack.unpack(string.sub(raw, 2))
    r = {
      spec = s.p, state = s.s, prev = s.v, ctime = s.c, stime = s.t, start = s.b, ['end'] = s.e,
      exit = s.x, retry = s.r, requeue = s.q, lost = s.l, result = s.o, fail = s.f, node = s.n,
      attempt = s.a, slots = s.z, maxRetry = s.m, dblk = s.d, stg = s.g, sig = s.i, msig = s.j,
    }
  else
    r = cmsgpack.unpack(raw)
  end
  local ctime = r.ctime
  if r.stime then r.stime = r.stime + ctime end
  if r.start then r.start = r.start + ctime end
  if r['end'] then r['end'] = r['end'] + ctime end
  if r.state == 'completed' then
    if r['end'] == nil then r['end'] = r.stime end
    if r.prev == nil then r.prev = 'running' end
    if r.result == nil then r.result = 'success' end
  end
  return r
end

-- Stores record `r` (as `load_record` returns it) at `key`.
local function store_record(key, r)
  local function keep(x)
    if x ~= cjson.null then return x end
  end
  local ctime = r.ctime
  local function rel(t)
    if t and t ~= cjson.null then return t - ctime end
  end
  local s = {
    p = keep(r.spec), s = keep(r.state), v = keep(r.prev), c = keep(r.ctime), t = rel(r.stime),
    b = rel(r.start), e = rel(r['end']), x = keep(r.exit), r = keep(r.retry), q = keep(r.requeue),
    l = keep(r.lost), o = keep(r.result), f = keep(r.fail), n = keep(r.node), a = keep(r.attempt),
    z = keep(r.slots), m = keep(r.maxRetry), d = keep(r.dblk), g = keep(r.stg), i = keep(r.sig),
    j = keep(r.msig),
  }
  if s.s == 'completed' then
    if s.e == s.t then s.e = nil end
    if s.v == 'running' then s.v = nil end
    if s.o == 'success' then s.o = nil end
  end
  redis.call('SET', key, MARK .. cmsgpack.pack(s))
end
