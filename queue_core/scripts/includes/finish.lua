--@include flow
-- Remove every trace of a job that sits in the finished set `set_key`.
local function remove_job(K, id, set_key)
  drop_deps(K, id)
  redis.call('ZREM', set_key, id)
  redis.call('HDEL', K.jobs, id)
  redis.call('HDEL', K.state, id)
  redis.call('HDEL', K.results, id)
  redis.call('HDEL', K.errors, id)
  redis.call('HDEL', K.progress, id)
  redis.call('HDEL', K.logs, id)
  redis.call('HDEL', K.corrupt, id)
end

-- Apply a retention policy to a finished set: drop jobs older than `age_ms`, then keep
-- the newest `count` (-1 means no limit). At most 1000 removals of each kind per call.
local function trim_finished(K, set_key, count, age_ms, now)
  if age_ms and age_ms >= 0 then
    local old = redis.call('ZRANGEBYSCORE', set_key, '-inf', now - age_ms, 'LIMIT', 0, 1000)
    for _, id in ipairs(old) do
      remove_job(K, id, set_key)
    end
  end
  if count and count >= 0 then
    local extra = redis.call('ZCARD', set_key) - count
    if extra > 0 then
      local ids = redis.call('ZRANGE', set_key, 0, math.min(extra, 1000) - 1)
      for _, id in ipairs(ids) do
        remove_job(K, id, set_key)
      end
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

-- Finish an attempt for good: the job enters `set_key` (completed or failed) or is
-- removed at once when its policy keeps none, then the set is trimmed. `rec` is left as
-- the job's final record.
local function finish(K, id, rec, set_key, count, age_ms, now)
  redis.call('ZREM', K.active, id)
  release_dedup(K, id, rec, false)
  rec.atm = (rec.atm or 0) + 1
  rec.fon = now
  notify_parent(K, id, rec, set_key == K.failed and 'failed' or 'completed', now)
  if count == 0 then
    remove_job(K, id, set_key)
    return
  end
  redis.call('HSET', K.state, id, cjson.encode(rec))
  redis.call('ZADD', set_key, now, id)
  trim_finished(K, set_key, count, age_ms, now)
end
