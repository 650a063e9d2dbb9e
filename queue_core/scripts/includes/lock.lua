--@include quarantine
-- Check that `token` still holds the job's lock.
-- Returns the decoded record and 1 when it does; nil and 0 when another worker owns the
-- job (or stalled recovery took it); the record as stored and 2 when this very attempt
-- was already settled (a retried call whose first reply was lost); nil and -1 when the job
-- no longer exists; nil and 3 when its record was corrupt: the job was quarantined.
-- With `take`, a job whose lock holds leaves `active` here (status 1), one command where
-- checking that it is still there would be another: the caller then finishes it at once
-- (finish's `taken`).
local function check_lock(K, id, token, now, take)
  local rec, reason, version = read_record(K, id)
  if version then
    return nil, 0 -- a newer queue_core's job: never this worker's
  end
  if not rec then
    if redis.call('HEXISTS', K.jobs, id) == 0 and not redis.call('ZSCORE', K.active, id) then
      return nil, -1 -- removed (retention, or by hand) while it ran
    end
    quarantine(K, id, reason, now)
    return nil, 3
  end
  if rec.tok ~= token then
    return nil, 0
  end
  if take then
    return rec, redis.call('ZREM', K.active, id) == 1 and 1 or 2
  end
  if not redis.call('ZSCORE', K.active, id) then
    return rec, 2
  end
  return rec, 1
end
