--[[
get_workers: the live workers of the queue. Entries whose heartbeat expired (a worker
killed or cut off) are dropped first, from both keys.

KEYS: workers workerinfo

ARGV: none

Returns: {now, id_1, info_1, ..., id_n, info_n}, info being the JSON that the worker's
last beat wrote (heartbeat.lua), in order of heartbeat expiry.
]]
--@include now_ms

local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', K.workers, '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', K.workers, id)
  redis.call('HDEL', K.workerinfo, id)
end
local reply = {now}
local live = redis.call('ZRANGE', K.workers, 0, -1)
for _, id in ipairs(live) do
  local info = redis.call('HGET', K.workerinfo, id)
  if info then
    reply[#reply + 1] = id
    reply[#reply + 1] = info
  end
end
return reply
