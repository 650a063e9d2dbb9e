--@include record
--@include finish
-- Remove every trace of a job, whatever set holds it: its envelope, record, result,
-- error, progress, logs, quarantined record, and the dedup key it holds.
local function remove_whole(K, id)
  local rec = read_record(K, id)
  if rec then
    release_dedup(K, id, rec, true)
  end
  redis.call('ZREM', K.wait, id)
  redis.call('ZREM', K.active, id)
  redis.call('ZREM', K.delayed, id)
  redis.call('ZREM', K.completed, id)
  remove_job(K, id, K.failed)
end
