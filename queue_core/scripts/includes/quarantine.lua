--@include record
--@include events
--@include error_history
-- Jobs quarantined by this call, {id, reason, ...}: workers log them and tell their hooks.
local QUARANTINED = {} --@per-call

-- Move a job whose stored data is unreadable to the failed set, with a CorruptJobError,
-- out of every other state. Its unreadable record is kept in `corrupt` and a fresh record
-- replaces it, so that nothing else trips over it; its envelope stays where it is.
local function quarantine(K, id, reason, now)
  redis.call('ZREM', K.wait, id)
  redis.call('ZREM', K.active, id)
  redis.call('ZREM', K.delayed, id)
  redis.call('ZREM', K.children, id) -- a flow parent that waited for its children
  local raw = redis.call('HGET', K.state, id)
  if raw then
    redis.call('HSET', K.corrupt, id, raw)
  end
  redis.call('HSET', K.state, id, cjson.encode({v = RECORD_VERSION, ts = now, fon = now, q = 1}))
  record_error(K, id, {type = 'CorruptJobError',
    message = 'job ' .. id .. ' is corrupt: ' .. reason .. '; it was quarantined',
    stack = ''}, nil, now)
  redis.call('ZADD', K.failed, now, id)
  emit(K, 'failed', 'id', id, 'attempts', 0, 'type', 'CorruptJobError', 'reason', reason)
  QUARANTINED[#QUARANTINED + 1] = id
  QUARANTINED[#QUARANTINED + 1] = reason
end
