--[[
add: enqueue one or more jobs, atomically. A job whose id already exists is left as it
is and reported as a duplicate; nothing is written for it. A job whose dedup key is held
is deduplicated into the job that holds it: nothing is created for it, but a ttl-held key
restarts its ttl (extend), and a holder that is still delayed and has never started takes
the add's envelope and options and restarts its delay from now (replace: a debounce).

KEYS: meta jobs state results errors progress wait active delayed completed failed marker corrupt events dedup dedupexp children

ARGV:
  1      n, the number of jobs
  then 13 values per job, the i-th job starting at 2 + (i - 1) * 13:
  +0     job id, or "" to generate one (HINCRBY meta id)
  +1     envelope: a JSON header line, a newline, the serialized data
  +2     priority, an integer in [-1e6, 1e6]
  +3     lifo: 1 to run ahead of the jobs of the same priority, else 0
  +4     delay in ms (0: ready now)
  +5, +6 keep-completed count and age in ms (-1: no limit)
  +7, +8 keep-failed count and age in ms (-1: no limit)
  +9     dedup key, or "" for none
  +10    dedup ttl in ms, or -1: the key is held until its job finishes
  +11    extend: 1 to restart a held key's ttl on each blocked add, else 0
  +12    replace: 1 to replace a held key's delayed, never started job, else 0

Returns: {now, job_1, ..., job_n} where job_i is {id, 1, state} for a new job (state is
"waiting" or "delayed"), {id, 0, snapshot} for a duplicate of a job id, or {id, 2,
snapshot} for an add deduplicated into job `id` by its dedup key (snapshot is false when
that job is gone while its key's ttl runs), snapshot being {envelope, record, state,
score, result, error, progress, corrupt}. The queue's `meta` field `fmt` keeps the newest
job format version written to it.

Dedup keys: `dedup` maps a key to JSON {id, exp}, the job that holds it and, for a key
held for a ttl, until when (ms); `dedupexp` scores those keys by `exp`, so that each add
with a dedup key drops up to 100 expired entries and the hash stays bounded. A key held
without a ttl is freed when its job finishes or is removed (finish.lua, release_dedup).
]]
--@include now_ms
--@include wait_score
--@include schedule_delayed
--@include read_job
--@include record
--@include events
--@include after_add

local DEDUP_SWEEP = 100

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
local swept = false

local function dedup_entry(key)
  local raw = redis.call('HGET', K.dedup, key)
  if not raw then
    return nil
  end
  local ok, entry = pcall(cjson.decode, raw)
  if not ok or type(entry) ~= 'table' or type(entry.id) ~= 'string'
      or (entry.exp ~= nil and type(entry.exp) ~= 'number') then
    return nil -- not written by these scripts: the key counts as free and is overwritten
  end
  return entry
end

local function drop_expired_dedup()
  local keys = redis.call('ZRANGEBYSCORE', K.dedupexp, '-inf', now, 'LIMIT', 0, DEDUP_SWEEP)
  for _, key in ipairs(keys) do
    redis.call('ZREM', K.dedupexp, key)
    local entry = dedup_entry(key)
    if entry and entry.exp and entry.exp <= now then
      redis.call('HDEL', K.dedup, key)
    end
  end
end

-- The job holding `key` now and whether it holds it for a ttl; nil when the key is free.
-- A key held until its job finishes is freed by release_dedup; a job found finished or
-- gone all the same (a removal by hand) frees it here.
local function dedup_holder(key)
  local entry = dedup_entry(key)
  if not entry then
    return nil
  end
  if entry.exp then
    if entry.exp > now then
      return entry.id, true
    end
    return nil
  end
  local id = entry.id
  if redis.call('HEXISTS', K.jobs, id) == 0 or redis.call('ZSCORE', K.completed, id)
      or redis.call('ZSCORE', K.failed, id) then
    return nil
  end
  return id, false
end

local function hold_dedup(key, id, ttl)
  if ttl > 0 then
    redis.call('HSET', K.dedup, key, cjson.encode({id = id, exp = now + ttl}))
    redis.call('ZADD', K.dedupexp, now + ttl, key)
  else
    redis.call('HSET', K.dedup, key, cjson.encode({id = id}))
    redis.call('ZREM', K.dedupexp, key)
  end
end

-- The record fields that come from an add's options (a replace rewrites them).
local function set_options(rec, base)
  local priority = tonumber(ARGV[base + 2])
  rec.p = priority ~= 0 and priority or nil
  rec.lifo = ARGV[base + 3] == '1' and 1 or nil
  local retention = {'rcn', 'rca', 'rfn', 'rfa'}
  for j, field in ipairs(retention) do
    local value = tonumber(ARGV[base + 4 + j])
    rec[field] = value >= 0 and value or nil
  end
end

-- Debounce: a holder still delayed and never started takes the add's envelope and
-- options, and its delay restarts from now. Returns its new due time, or nil.
local function replace_delayed(id, base)
  local delay = tonumber(ARGV[base + 4])
  if delay <= 0 or not redis.call('ZSCORE', K.delayed, id) then
    return nil
  end
  local rec = read_record(K, id)
  if not rec or (rec.ats or 0) > 0 then
    return nil -- a corrupt or newer record is left alone; a started job is not replaced
  end
  set_options(rec, base)
  redis.call('HSET', K.jobs, id, ARGV[base + 1])
  redis.call('HSET', K.state, id, cjson.encode(rec))
  schedule_delayed(K, id, now + delay)
  return now + delay
end

local function deduplicate(holder, held_for_ttl, key, base)
  if held_for_ttl and ARGV[base + 11] == '1' then
    hold_dedup(key, holder, tonumber(ARGV[base + 10]))
  end
  local due = ARGV[base + 12] == '1' and replace_delayed(holder, base)
  if due then
    emit(K, 'deduplicated', 'id', holder, 'key', key, 'replaced', 1, 'due', due)
  else
    emit(K, 'deduplicated', 'id', holder, 'key', key)
  end
  return {holder, 2, read_job(K, holder)}
end

local function create(id, base, key)
  local priority = tonumber(ARGV[base + 2])
  local lifo = ARGV[base + 3] == '1'
  local delay = tonumber(ARGV[base + 4])
  local rec = {v = RECORD_VERSION, ts = now}
  set_options(rec, base)
  if key ~= '' then
    local ttl = tonumber(ARGV[base + 10])
    rec.ddk = key
    if ttl > 0 then rec.ddt = 1 end
    hold_dedup(key, id, ttl)
  end
  redis.call('HSET', K.jobs, id, ARGV[base + 1])
  redis.call('HSET', K.state, id, cjson.encode(rec))
  if delay > 0 then
    schedule_delayed(K, id, now + delay)
    emit(K, 'added', 'id', id, 'state', 'delayed', 'due', now + delay)
    return {id, 1, 'delayed'}
  end
  redis.call('ZADD', K.wait, wait_score(K, priority, lifo), id)
  ready = true
  emit(K, 'added', 'id', id, 'state', 'waiting')
  return {id, 1, 'waiting'}
end

for i = 1, n do
  local base = 2 + (i - 1) * 13
  local id = ARGV[base]
  local key = ARGV[base + 9]
  if id ~= '' and redis.call('HEXISTS', K.jobs, id) == 1 then
    reply[#reply + 1] = {id, 0, read_job(K, id)}
  else
    local holder, held_for_ttl = nil, false
    if key ~= '' then
      if not swept then
        drop_expired_dedup()
        swept = true
      end
      holder, held_for_ttl = dedup_holder(key)
    end
    if holder then
      reply[#reply + 1] = deduplicate(holder, held_for_ttl, key, base)
    else
      if id == '' then
        id = tostring(redis.call('HINCRBY', K.meta, 'id', 1))
      end
      reply[#reply + 1] = create(id, base, key)
    end
  end
end

after_add(K, ready, RECORD_VERSION)
return reply
