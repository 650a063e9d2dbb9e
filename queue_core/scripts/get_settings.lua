--[[
get_settings: the queue-wide settings and the current rate-limit hold (read only).

KEYS: meta limiter

ARGV: none

Returns: {paused, gcc, rlm, rld, evl, limiter count, limiter ttl ms}, each a string or
false when unset (ttl: -2 no limiter, -1 no expiry).
]]

local values = redis.call('HMGET', K.meta, 'paused', 'gcc', 'rlm', 'rld', 'evl')
values[6] = redis.call('GET', K.limiter) or false
values[7] = redis.call('PTTL', K.limiter)
return values
