--@include settings
--@include wait_score
-- The end of an add (add, add_flow): wake an idle worker when jobs became ready (not
-- while paused), and record the newest job format written to the queue (`fmt`).
local function after_add(K, ready, version)
  if ready and not settings(K).paused then
    wake_worker(K)
  end
  if tonumber(redis.call('HGET', K.meta, 'fmt') or '0') < version then
    redis.call('HSET', K.meta, 'fmt', version)
  end
end
