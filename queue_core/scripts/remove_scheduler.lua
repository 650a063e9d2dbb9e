--[[
remove_scheduler: delete a job scheduler and its pending run if that has not started.

KEYS: meta jobs state wait active delayed events schedulers

ARGV:
  1  scheduler id

Returns: 1 if the scheduler existed, else 0. A pending run still delayed or waiting is
removed with it; one already running finishes (it makes no next run).
]]
--@include allow_when_full
--@include events
--@include scheduler_config

allow_when_full(K) -- removing jobs frees memory: run even when Redis is full

local sid = ARGV[1]
if redis.call('HEXISTS', K.schedulers, 'c:' .. sid) == 0 then
  return 0
end
local cfg = scheduler_config(K, sid)
local pending = cfg and cfg.pending
if pending then
  for _, set in ipairs({K.delayed, K.wait}) do
    if redis.call('ZREM', set, pending) == 1 then
      redis.call('HDEL', K.jobs, pending)
      redis.call('HDEL', K.state, pending)
      emit(K, 'removed', 'id', pending, 'state', set == K.wait and 'waiting' or 'delayed')
    end
  end
end
redis.call('HDEL', K.schedulers, 'c:' .. sid, 'e:' .. sid)
emit(K, 'scheduler_removed', 'scheduler', sid)
return 1
