--[[
add: enqueue one or more jobs, atomically. A job whose id already exists is left as it
is and reported as a duplicate; nothing is written for it.

KEYS: meta jobs state results errors progress wait active delayed completed failed marker corrupt

ARGV:
  1      n, the number of jobs
  then 9 values per job, the i-th job starting at 2 + (i - 1) * 9:
  +0     job id, or "" to generate one (HINCRBY meta id)
  +1     envelope: a JSON header line, a newline, the serialized data
  +2     priority, an integer in [-1e6, 1e6]
  +3     lifo: 1 to run ahead of the jobs of the same priority, else 0
  +4     delay in ms (0: ready now)
  +5, +6 keep-completed count and age in ms (-1: no limit)
  +7, +8 keep-failed count and age in ms (-1: no limit)

Returns: {now, job_1, ..., job_n} where job_i is {id, 1, state} for a new job (state is
"waiting" or "delayed") or {id, 0, snapshot} for a duplicate, snapshot being
{envelope, record, state, score, result, error, progress, corrupt}. The queue's `meta`
field `fmt` keeps the newest job format version written to it.
]]
--@include now_ms
--@include wait_score
--@include schedule_delayed
--@include read_job
--@include record

local now = now_ms()
local n = tonumber(ARGV[1])
-- Checked before any write: a bulk add happens whole or not at all.
local last_id = redis.call('HGET', K.meta, 'id')
if last_id and not tonumber(last_id) then
  return redis.error_reply('ERR queue_core: the job id counter "id" of ' .. K.meta
    .. ' is not an integer; set it above the largest numeric job id to repair it')
end
local reply = {now}
local ready = false

for i = 1, n do
  local base = 2 + (i - 1) * 9
  local id = ARGV[base]
  local duplicate = false
  if id == '' then
    id = tostring(redis.call('HINCRBY', K.meta, 'id', 1))
  elseif redis.call('HEXISTS', K.jobs, id) == 1 then
    duplicate = true
  end

  if duplicate then
    reply[#reply + 1] = {id, 0, read_job(K, id)}
  else
    local priority = tonumber(ARGV[base + 2])
    local lifo = ARGV[base + 3] == '1'
    local delay = tonumber(ARGV[base + 4])
    local rec = {v = RECORD_VERSION, ts = now}
    if priority ~= 0 then rec.p = priority end
    if lifo then rec.lifo = 1 end
    local retention = {'rcn', 'rca', 'rfn', 'rfa'}
    for j, field in ipairs(retention) do
      local value = tonumber(ARGV[base + 4 + j])
      if value >= 0 then rec[field] = value end
    end
    redis.call('HSET', K.jobs, id, ARGV[base + 1])
    redis.call('HSET', K.state, id, cjson.encode(rec))
    if delay > 0 then
      schedule_delayed(K, id, now + delay)
      reply[#reply + 1] = {id, 1, 'delayed'}
    else
      redis.call('ZADD', K.wait, wait_score(K, priority, lifo), id)
      ready = true
      reply[#reply + 1] = {id, 1, 'waiting'}
    end
  end
end

if ready then
  wake_worker(K)
end
if tonumber(redis.call('HGET', K.meta, 'fmt') or '0') < RECORD_VERSION then
  redis.call('HSET', K.meta, 'fmt', RECORD_VERSION)
end
return reply
