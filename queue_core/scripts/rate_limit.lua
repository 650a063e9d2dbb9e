--[[
rate_limit: hold every worker of the queue for a while (worker.rate_limit(), for an
upstream's 429). Workers that try to fetch meanwhile are told how long to wait.

KEYS: limiter

ARGV:
  1  duration in ms

Returns: the remaining hold in ms (at least the requested duration).
]]
--@include limits

set_manual_limit(K, tonumber(ARGV[1]))
return redis.call('PTTL', K.limiter)
