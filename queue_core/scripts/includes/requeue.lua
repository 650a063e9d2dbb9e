--@include wait_score
-- Put an active job back in `wait`, ready from `now`, its lock gone (the caller clears or
-- keeps `tok` and the counters): after a stall (at the back of its priority) or a lost
-- fetch reply (`front`: it had been next).
local function requeue(K, id, rec, now, front)
  redis.call('ZREM', K.active, id)
  rec.rdy = now
  redis.call('HSET', K.state, id, cjson.encode(rec))
  redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, front), id)
end
