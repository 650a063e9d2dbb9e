--@include record
--@include finish
-- Remove every trace of a job, whatever set holds it: its envelope, record, result,
-- error, progress, logs, quarantined record, and the dedup key it holds. A flow child that
-- did not complete tells its parent it is gone (the parent goes on without it); a parent
-- cancels its children that have not finished.
local function remove_whole(K, id, now)
  local rec = read_record(K, id)
  if rec then
    release_dedup(K, id, rec, true)
    if rec.par and not redis.call('ZSCORE', K.completed, id) then
      notify_parent(K, id, rec, 'removed', now)
    end
  end
  if redis.call('ZREM', K.children, id) == 1 then
    cancel_children(K, id, 'its parent was removed', now)
  end
  redis.call('ZREM', K.wait, id)
  redis.call('ZREM', K.active, id)
  redis.call('ZREM', K.delayed, id)
  redis.call('ZREM', K.completed, id)
  remove_job(K, id, K.failed)
end
