--[[
pause: pause or resume the queue. While paused, no worker of any process takes a job
(fetching reads the flag in the same script that would take the job); waiting jobs stay,
running ones finish, adds are accepted. The flag lives in `meta`, so it survives a restart.

KEYS: meta wait marker events

ARGV:
  1  1 to pause, 0 to resume

Returns: 1 if the state changed, 0 if the queue already was so.
]]
--@include events
--@include wait_score

local pausing = ARGV[1] == '1'
if settings(K).paused == pausing then
  return 0
end
if pausing then
  redis.call('HSET', K.meta, 'paused', 1)
  emit(K, 'paused')
else
  redis.call('HDEL', K.meta, 'paused')
  emit(K, 'resumed')
  if redis.call('ZCARD', K.wait) > 0 then
    wake_worker(K) -- the woken worker passes the baton while jobs remain
  end
end
return 1
