--@include wait_score
--@include quarantine
--@include events
-- Move delayed jobs whose time has come into `wait` (at most 1000 per call).
-- A job flagged `front` (sent back by a rate limit) or `lifo` enters ahead of its priority.
-- `rdy` records when the job became ready (its due time), for the oldest-waiting-job age.
-- A corrupt record quarantines its job; a newer format's job is promoted as it is.
local function promote_delayed(K, now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 1000, 'WITHSCORES')
  for i = 1, #due, 2 do
    local id = due[i]
    local rec, reason, version = read_record(K, id)
    if rec then
      redis.call('ZREM', K.delayed, id)
      local front = rec.front == 1 or rec.lifo == 1
      rec.front = nil
      rec.rdy = tonumber(due[i + 1])
      redis.call('HSET', K.state, id, cjson.encode(rec))
      redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, front), id)
      emit(K, 'waiting', 'id', id)
    elseif version then
      -- Ready all the same, at its priority if that can be read, so that the newer
      -- workers find it; its record is not rewritten.
      redis.call('ZREM', K.delayed, id)
      local ok, newer = pcall(cjson.decode, redis.call('HGET', K.state, id))
      local priority = ok and type(newer) == 'table' and type(newer.p) == 'number' and newer.p or 0
      redis.call('ZADD', K.wait, wait_score(K, priority, false), id)
    else
      quarantine(K, id, reason, now)
    end
  end
  return #due / 2
end
