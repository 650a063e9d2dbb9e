--[[
set_limits: change the queue-wide settings that every worker obeys: the global
concurrency, the rate limit and the events stream's length (see includes/settings.lua).
Idle workers are woken so that a raised limit takes effect at once.

KEYS: meta wait marker

ARGV:
  pairs of field, value: gcc | rlm | rld | evl; the value "" removes the field (no limit,
  or the default events length)

Returns: 1
]]
--@include wait_score

for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', K.meta, ARGV[i])
  else
    redis.call('HSET', K.meta, ARGV[i], ARGV[i + 1])
  end
end
if redis.call('ZCARD', K.wait) > 0 then
  wake_worker(K)
end
return 1
