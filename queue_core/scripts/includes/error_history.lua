-- A job's errors, one JSON value per job in `errors` (read as Job.errors):
--   {type, message, stack, a, t, prev}
-- the error of its latest failure, `a` the attempt that failure ended (as attempts_made
-- counts them; absent when it ended none: cancelled or stalled while not settling,
-- quarantined, failed by a child), `t` its time (ms), and `prev` the errors of the earlier
-- failures, oldest first, in the same shape without a `prev` of their own. Values written
-- before this history existed are {type, message, stack} alone. When the job completes or
-- an operator retries it, its latest error joins the history: the value is {prev} alone,
-- so the job has no current error but keeps its past ones.

-- The errors a job keeps: the latest and up to ERRORS_KEPT - 1 earlier ones (older ones
-- are dropped), which bounds the value of a job that fails again and again.
local ERRORS_KEPT = 10

-- The errors stored for `id`, oldest first, or nil when it has none. A value that cannot
-- be read starts the history afresh rather than failing the script.
local function error_history(K, id)
  local raw = redis.call('HGET', K.errors, id)
  if not raw then
    return nil
  end
  local history = {}
  local ok, stored = pcall(cjson.decode, raw)
  if not ok or type(stored) ~= 'table' then
    return history
  end
  if type(stored.prev) == 'table' then
    for _, entry in ipairs(stored.prev) do
      if type(entry) == 'table' then
        history[#history + 1] = entry
      end
    end
  end
  if stored.message ~= nil or stored.type ~= nil then -- a current error, not {prev} alone
    stored.prev = nil
    history[#history + 1] = stored
  end
  return history
end

-- The newest `n` entries of `history`, oldest first; nil when there are none (cjson would
-- encode an empty table as {}, not []).
local function newest_errors(history, n)
  if not history or #history == 0 then
    return nil
  end
  local out = {}
  for i = math.max(1, #history - n + 1), #history do
    out[#out + 1] = history[i]
  end
  return out
end

-- Store the error of a failure of `id`: `err` is the worker's error JSON or a table
-- {type, message, stack}; `attempt` the attempt it ended, or nil. The error stored before
-- it, if any, moves into the history.
local function record_error(K, id, err, attempt, now)
  if type(err) == 'string' then
    local ok, decoded = pcall(cjson.decode, err)
    if not ok or type(decoded) ~= 'table' then
      redis.call('HSET', K.errors, id, err) -- stored as given, as before this history existed
      return
    end
    err = decoded
  end
  err.a, err.t = attempt, now
  err.prev = newest_errors(error_history(K, id), ERRORS_KEPT - 1)
  redis.call('HSET', K.errors, id, cjson.encode(err))
end

-- The job runs again from scratch or completed: its errors become history only.
local function archive_errors(K, id)
  local history = error_history(K, id)
  if history then
    local kept = newest_errors(history, ERRORS_KEPT)
    if kept then
      redis.call('HSET', K.errors, id, cjson.encode({prev = kept}))
    else
      redis.call('HDEL', K.errors, id)
    end
  end
end
