--@include wait_score
--@include events
--@include error_history
-- The record fields of a job's past runs, cleared when an operator retries it: attempts,
-- stalls, lock, start and finish times, quarantine flag, cancel request, front flag.
local RETRY_CLEARED = {'ats', 'atm', 'stc', 'tok', 'pon', 'fon', 'q', 'cxr', 'front'}

-- Why a finished job cannot be retried, or nil: its record must be sound and its own (a
-- quarantined job's record is a stand-in) and its envelope present, or a worker would
-- only quarantine it again.
local function retry_refusal(K, id, rec, reason, version)
  if version then
    return 'it was written by a newer queue_core (format ' .. tostring(version) .. ')'
  elseif not rec then
    return 'it is corrupt (' .. reason .. ')'
  elseif rec.q == 1 then
    return 'it was quarantined as corrupt; repair its record first'
  elseif redis.call('HEXISTS', K.jobs, id) == 0 then
    return 'its envelope is missing'
  end
  return nil
end

-- Send a finished job in `set_key` (completed or failed) back to wait at its priority,
-- keeping its id, data, options, logs and past errors: it runs as if new. `rtr` counts
-- these manual retries (tracing links a rerun to the first run). The caller wakes a worker.
local function retry_finished(K, id, rec, set_key, now)
  redis.call('ZREM', set_key, id)
  for _, field in ipairs(RETRY_CLEARED) do
    rec[field] = nil
  end
  rec.rdy = now
  rec.rtr = (rec.rtr or 0) + 1
  redis.call('HSET', K.state, id, cjson.encode(rec))
  redis.call('HDEL', K.results, id)
  archive_errors(K, id) -- its past errors stay, as history
  redis.call('HDEL', K.progress, id)
  redis.call('HDEL', K.corrupt, id)
  redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, false), id)
  if rec.ddk and not rec.ddt and redis.call('HEXISTS', K.dedup, rec.ddk) == 0 then
    -- Unfinished again: it holds its dedup key again, unless another job took it.
    redis.call('HSET', K.dedup, rec.ddk, cjson.encode({id = id}))
  end
  emit(K, 'waiting', 'id', id, 'retried', 1)
end
