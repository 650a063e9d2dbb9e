-- Check that `token` still holds the job's lock.
-- Returns the decoded record and 1 when it does; nil and 0 when another worker owns the
-- job (or stalled recovery took it); nil and 2 when this very attempt was already settled
-- (a retried call whose first reply was lost); nil and -1 when the job no longer exists.
local function check_lock(K, id, token)
  local raw = redis.call('HGET', K.state, id)
  if not raw then
    return nil, -1
  end
  local rec = cjson.decode(raw)
  if rec.tok ~= token then
    return nil, 0
  end
  if not redis.call('ZSCORE', K.active, id) then
    return nil, 2
  end
  return rec, 1
end
