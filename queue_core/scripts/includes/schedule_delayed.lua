--@include wait_score
-- Put a job in `delayed` until `due` (ms). When it becomes the earliest delayed job,
-- idle workers are woken so that they re-compute how long to block.
local function schedule_delayed(K, id, due)
  redis.call('ZADD', K.delayed, due, id)
  local first = redis.call('ZRANGE', K.delayed, '0', '0')
  if first[1] == id then
    wake_worker(K)
  end
end
