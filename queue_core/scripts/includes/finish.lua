--@include now_ms
--@include flow
-- The most ids one multi-field HDEL/HMGET/ZREM takes: unpack puts them all on Lua's C
-- stack (LUAI_MAXCSTACK, 8000 slots), so larger lists go in chunks.
local REMOVE_CHUNK = 5000
-- The most jobs one trim removes per policy (count, age): bounds a script's run time; a
-- set further over its policy loses the rest at the next finishes.
local TRIM_MAX = 10000

local function hdel_all(key, fields)
  for first = 1, #fields, REMOVE_CHUNK do
    redis.call('HDEL', key, unpack(fields, first, math.min(first + REMOVE_CHUNK - 1, #fields)))
  end
end

-- Remove every trace of the jobs `ids` (their envelope, record, result, errors, progress,
-- logs, quarantined record, and a flow parent's children and their outcomes), members of
-- the finished set `set_key`: a few multi-field calls per chunk, whatever the number.
local function remove_jobs(K, set_key, ids)
  local parents, outcomes = {}, {}
  for first = 1, #ids, REMOVE_CHUNK do
    local last = math.min(first + REMOVE_CHUNK - 1, #ids)
    local deps = redis.call('HMGET', K.deps, unpack(ids, first, last))
    for i = 1, last - first + 1 do
      if deps[i] then
        local pid = ids[first + i - 1]
        parents[#parents + 1] = pid
        for _, ref in ipairs(decode_children(deps[i])) do
          outcomes[#outcomes + 1] = dep_field(pid, ref)
        end
      end
    end
    redis.call('ZREM', set_key, unpack(ids, first, last))
  end
  hdel_all(K.depout, outcomes)
  hdel_all(K.deps, parents)
  for _, hash in ipairs({K.jobs, K.state, K.results, K.errors, K.progress, K.logs, K.corrupt}) do
    hdel_all(hash, ids)
  end
end

-- Remove every trace of a job that sits in the finished set `set_key`.
local function remove_job(K, id, set_key)
  remove_jobs(K, set_key, {id})
end

-- Retention is amortized: a set is trimmed only once it is `slack` past its policy, and
-- then back to the policy at once with multi-field calls, rather than one job per finish
-- with a dozen calls each. The newest `count` are always kept, at most count + slack.
local function count_slack(count)
  return math.min(math.max(math.floor(count / 10), 10), 1000)
end

-- Jobs younger than `age_ms` are always kept, none older than age + slack once trimmed.
local function age_slack(age_ms)
  return math.min(math.floor(age_ms / 10), 60000)
end

-- Apply a retention policy to a finished set: drop jobs finished `age_ms` ago or more,
-- then keep the newest `count` (-1: no limit), each with its slack (see above).
local function trim_finished(K, set_key, count, age_ms, now)
  if age_ms and age_ms >= 0 then
    local oldest = redis.call('ZRANGE', set_key, '0', '0', 'WITHSCORES')
    if oldest[2] and tonumber(oldest[2]) <= now - age_ms - age_slack(age_ms) then
      remove_jobs(K, set_key,
        redis.call('ZRANGEBYSCORE', set_key, '-inf', now - age_ms, 'LIMIT', 0, TRIM_MAX))
    end
  end
  if count and count >= 0 then
    local extra = redis.call('ZCARD', set_key) - count
    if extra > count_slack(count) then
      remove_jobs(K, set_key, redis.call('ZRANGE', set_key, 0, math.min(extra, TRIM_MAX) - 1))
    end
  end
end

-- A finished job gives up its dedup key, unless the key holds for a ttl of its own.
local function release_dedup(K, id, rec, always)
  if rec.ddk and (always or not rec.ddt) then
    local held = redis.call('HGET', K.dedup, rec.ddk)
    if held then
      local ok, entry = pcall(cjson.decode, held)
      if not ok or type(entry) ~= 'table' or entry.id == id then
        redis.call('HDEL', K.dedup, rec.ddk)
      end
    end
  end
end

-- The jobs this call has put in a finished set so far.
local FINISHED_IN_CALL = 0 --@per-call

-- A finished job's score in its set: `now` (ms) and the microseconds of the clock reading
-- it came from, plus one microsecond per job this call finished before it. Jobs finished
-- in the same millisecond (one shared settle call, or several calls) are then ordered as
-- they finished, and "keep the newest N" keeps those, not the ones whose ids sort last.
-- A double holds a millisecond timestamp to a quarter of a microsecond.
local function finish_score(now)
  local us = NOW_READ_MS == now and NOW_READ_US or 0
  FINISHED_IN_CALL = FINISHED_IN_CALL + 1
  return now + (us + FINISHED_IN_CALL - 1) / 1000
end

-- Finish an attempt for good: the job enters `set_key` (completed or failed) or is
-- removed at once when its policy keeps none, then the set is trimmed. `rec` is left as
-- the job's final record; returns it encoded, so that the reply need not encode it again.
-- `taken`: the job has left `active` already (check_lock's `take`).
local function finish(K, id, rec, set_key, count, age_ms, now, taken)
  if not taken then
    redis.call('ZREM', K.active, id)
  end
  release_dedup(K, id, rec, false)
  rec.atm = (rec.atm or 0) + 1
  rec.fon = now
  notify_parent(K, id, rec, set_key == K.failed and 'failed' or 'completed', now)
  local encoded = cjson.encode(rec)
  if count == 0 then
    remove_job(K, id, set_key)
    return encoded
  end
  redis.call('HSET', K.state, id, encoded)
  redis.call('ZADD', set_key, finish_score(now), id)
  trim_finished(K, set_key, count, age_ms, now)
  return encoded
end
