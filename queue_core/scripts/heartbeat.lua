--[[
heartbeat: a worker announces itself (registry.py's Heartbeat, every heartbeat interval),
or removes its entry at a graceful shutdown. An entry whose expiry passes without a new
beat (a killed or frozen worker) is dropped by get_workers.

KEYS: workers workerinfo

ARGV:
  1  worker id
  2  "beat" or "remove"
  3  beat: the entry's time to live in ms (the worker beats again well before it ends)
  4  beat: the worker's info, a JSON object without "beat": {id, host, pid, queue,
     concurrency, started (ms), jobs: [ids of the jobs it runs]}

Returns: Redis's time in ms.
]]
--@include now_ms

local now = now_ms()
local id = ARGV[1]
if ARGV[2] == 'remove' then
  redis.call('ZREM', K.workers, id)
  redis.call('HDEL', K.workerinfo, id)
  return now
end
local info = ARGV[4]
if string.sub(info, 1, 2) ~= '{"' then
  return redis.error_reply('ERR queue_core: a worker info must be a non-empty JSON object')
end
-- The beat time is spliced in rather than through cjson, which would turn an empty
-- "jobs" list into an object.
redis.call('HSET', K.workerinfo, id, '{"beat":' .. now .. ',' .. string.sub(info, 2))
redis.call('ZADD', K.workers, now + tonumber(ARGV[3]), id)
return now
