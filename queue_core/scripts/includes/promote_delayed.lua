--@include wait_score
-- Move delayed jobs whose time has come into `wait` (at most 1000 per call).
-- A job flagged `front` (sent back by a rate limit) or `lifo` enters ahead of its priority.
-- `rdy` records when the job became ready (its due time), for the oldest-waiting-job age.
local function promote_delayed(K, now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 1000, 'WITHSCORES')
  for i = 1, #due, 2 do
    local id = due[i]
    redis.call('ZREM', K.delayed, id)
    local raw = redis.call('HGET', K.state, id)
    if raw then
      local rec = cjson.decode(raw)
      local front = rec.front == 1 or rec.lifo == 1
      rec.front = nil
      rec.rdy = tonumber(due[i + 1])
      redis.call('HSET', K.state, id, cjson.encode(rec))
      redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, front), id)
    end
  end
  return #due / 2
end
