#!lua name=qc_floor
--[[
floor_settle: the least a settle can do in queue_core's data model, for bench/redis_floor.py
(never loaded by queue_core). Per group: complete one job (check its lock token, store its
result, rewrite its record, move it from active to completed, trim completed past its
count), then fetch up to N jobs (pop them from wait, rewrite each record with its attempt,
start time and lock token, put it in active under a deadline, return its envelope).
Nothing else: no settings, events, delayed jobs, rate limits, flows, deduplication,
schedulers, cancellation, error history, record checks or quarantine.

KEYS: jobs state results wait active completed (queue_core's keys of one queue)

ARGV: groups of 5: job id ('' to complete none), lock token, serialized return value,
  N to fetch, token prefix

Returns: one reply per group: {status, final record or '', id, envelope, record, ...};
  status 1 completed, 0 lock not held (nothing changed), -1 no job completed.
]]

local KEEP = 1000 -- completed jobs kept, as queue_core's default
local SLACK = 100 -- trimmed past KEEP + SLACK, back to KEEP (queue_core's amortized trim)
local LOCK_MS = 30000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function trim(K)
  local extra = redis.call('ZCARD', K.completed) - KEEP
  if extra > SLACK then
    local ids = redis.call('ZRANGE', K.completed, 0, extra - 1)
    redis.call('ZREM', K.completed, unpack(ids))
    redis.call('HDEL', K.jobs, unpack(ids))
    redis.call('HDEL', K.state, unpack(ids))
    redis.call('HDEL', K.results, unpack(ids))
  end
end

local function complete(K, id, token, value, now)
  local rec = cjson.decode(redis.call('HGET', K.state, id))
  if rec.tok ~= token or redis.call('ZREM', K.active, id) == 0 then
    return 0, ''
  end
  redis.call('HSET', K.results, id, value)
  rec.atm = (rec.atm or 0) + 1
  rec.fon = now
  local encoded = cjson.encode(rec)
  redis.call('HSET', K.state, id, encoded)
  redis.call('ZADD', K.completed, now, id)
  trim(K)
  return 1, encoded
end

local function fetch(K, n, prefix, now, out)
  if n == 0 then
    return
  end
  local popped = redis.call('ZPOPMIN', K.wait, n)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local rec = cjson.decode(redis.call('HGET', K.state, id))
    local attempt = (rec.ats or 0) + 1
    rec.ats = attempt
    rec.pon = now
    rec.tok = prefix .. ':' .. attempt
    local encoded = cjson.encode(rec)
    redis.call('HSET', K.state, id, encoded)
    redis.call('ZADD', K.active, now + LOCK_MS, id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', K.jobs, id)
    out[#out + 1] = encoded
  end
end

local function floor_settle(keys, argv)
  local K = {jobs = keys[1], state = keys[2], results = keys[3], wait = keys[4],
    active = keys[5], completed = keys[6]}
  local now = now_ms()
  local replies = {}
  for first = 1, #argv, 5 do
    local status, final = -1, ''
    if argv[first] ~= '' then
      status, final = complete(K, argv[first], argv[first + 1], argv[first + 2], now)
    end
    local out = {status, final}
    fetch(K, tonumber(argv[first + 3]), argv[first + 4], now, out)
    replies[#replies + 1] = out
  end
  return replies
end

redis.register_function('floor_settle', floor_settle)
