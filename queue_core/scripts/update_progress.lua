--[[
update_progress: store a job's progress (any JSON value).

KEYS: meta state progress events

ARGV:
  1  job id
  2  progress as JSON

Returns: 1, or 0 when the job does not exist (nothing is written).
]]
--@include events

if redis.call('HEXISTS', K.state, ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', K.progress, ARGV[1], ARGV[2])
emit(K, 'progress', 'id', ARGV[1], 'data', ARGV[2])
return 1
