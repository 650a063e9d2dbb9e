--[[
add_flow: add this queue's jobs of a flow (FlowProducer.add): a tree of jobs whose parents
wait for their children. The tree's jobs in other queues are added by other calls of this
script, in the same MULTI/EXEC transaction on a single Redis, or parents first on a Redis
Cluster (flows.py says why). A job whose id exists is left as it is and reported.

KEYS: meta jobs state wait delayed marker events children deps

ARGV:
  1      n, the number of jobs
  then 12 values per job, the i-th job starting at 2 + (i - 1) * 12:
  +0     job id (flows.py gives every job of a flow its id before the add)
  +1     envelope: a JSON header line, a newline, the serialized data
  +2     priority, an integer in [-1e6, 1e6]
  +3     lifo: 1 to run ahead of the jobs of the same priority, else 0
  +4     delay in ms (0: ready now; always 0 for a parent)
  +5, +6 keep-completed count and age in ms (-1: no limit)
  +7, +8 keep-failed count and age in ms (-1: no limit)
  +9     the parent's ref (JSON [queue, id]), or "" for the flow's root
  +10    what this job's failure does to its parent: fail, ignore, remove, or "" (it waits)
  +11    JSON array of its children's refs, or "" for a job without children

Returns: {now, job_1, ..., job_n} where job_i is {id, 1, state} for a new job (state
"waiting_children", "waiting" or "delayed") or {id, 0, "unknown"} for an id that existed.
]]
--@include now_ms
--@include wait_score
--@include schedule_delayed
--@include record
--@include events
--@include after_add

local now = now_ms()
local n = tonumber(ARGV[1])
local reply = {now}
local ready = false

for i = 1, n do
  local base = 2 + (i - 1) * 12
  local id = ARGV[base]
  if redis.call('HEXISTS', K.jobs, id) == 1 then
    reply[#reply + 1] = {id, 0, 'unknown'} -- FlowProducer reads it back
  else
    local priority = tonumber(ARGV[base + 2])
    local lifo = ARGV[base + 3] == '1'
    local delay = tonumber(ARGV[base + 4])
    local rec = {v = RECORD_VERSION, ts = now, p = priority ~= 0 and priority or nil,
      lifo = lifo and 1 or nil}
    for j, field in ipairs({'rcn', 'rca', 'rfn', 'rfa'}) do
      local value = tonumber(ARGV[base + 4 + j])
      rec[field] = value >= 0 and value or nil
    end
    if ARGV[base + 9] ~= '' then
      rec.par = ARGV[base + 9]
      rec.fpo = ARGV[base + 10] ~= '' and ARGV[base + 10] or nil
    end
    local state
    if ARGV[base + 11] ~= '' then
      local refs = cjson.decode(ARGV[base + 11])
      rec.dpn = #refs
      redis.call('HSET', K.deps, id, ARGV[base + 11])
      redis.call('ZADD', K.children, now, id)
      state = 'waiting_children'
    elseif delay > 0 then
      schedule_delayed(K, id, now + delay)
      state = 'delayed'
    else
      redis.call('ZADD', K.wait, wait_score(K, priority, lifo), id)
      ready = true
      state = 'waiting'
    end
    redis.call('HSET', K.jobs, id, ARGV[base + 1])
    redis.call('HSET', K.state, id, cjson.encode(rec))
    if rec.par then
      emit(K, 'added', 'id', id, 'state', state, 'parent', rec.par)
    else
      emit(K, 'added', 'id', id, 'state', state)
    end
    reply[#reply + 1] = {id, 1, state}
  end
end

after_add(K, ready, RECORD_VERSION)
return reply
