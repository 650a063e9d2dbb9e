--[[
obliterate: one chunk of destroying a queue. The first call pauses the queue (workers
take nothing new), unless jobs are active and `force` is not given: then it refuses and
changes nothing. Each call removes up to `count` jobs wholly (as remove_job does: every
field and set member of an id together, so no job is ever half removed), active ones too
under `force`; the call that finds every set empty deletes every remaining key of the
queue (settings, counters, events, limiter, wake-up marker, dedup keys, worker list, and
any orphan field). A job added after that call survives, whole. The outbox stays: it
holds what the removed flow children owe their parents in other queues (Queue.obliterate
delivers it).

KEYS: meta jobs state results errors progress logs wait active delayed completed failed marker limiter corrupt events workers workerinfo dedup dedupexp schedulers children deps depout outbox outboxat

ARGV:
  1  1 to remove active jobs too (force), else 0
  2  the most jobs to remove in this call

Returns: {status, n}: status 1 done (every key deleted) and n jobs removed by this call;
0 more to do, n removed; -1 refused, nothing changed, n jobs are active.
]]
--@include allow_when_full
--@include remove_whole
--@include now_ms

allow_when_full(K) -- removing jobs frees memory: run even when Redis is full

local count = tonumber(ARGV[2])
local now = now_ms()
local active = redis.call('ZCARD', K.active)
if active > 0 and ARGV[1] ~= '1' then
  return {-1, active}
end
redis.call('HSET', K.meta, 'paused', 1)
local removed = 0
for _, set in ipairs({K.active, K.wait, K.delayed, K.children, K.completed, K.failed}) do
  if removed < count then
    for _, id in ipairs(redis.call('ZRANGE', set, 0, count - removed - 1)) do
      remove_whole(K, id, now)
      removed = removed + 1
    end
  end
end
for _, set in ipairs({K.active, K.wait, K.delayed, K.children, K.completed, K.failed}) do
  if redis.call('ZCARD', set) > 0 then
    return {0, removed}
  end
end
for _, key in ipairs({K.meta, K.jobs, K.state, K.results, K.errors, K.progress, K.logs,
    K.wait, K.active, K.delayed, K.completed, K.failed, K.marker, K.limiter, K.corrupt,
    K.events, K.workers, K.workerinfo, K.dedup, K.dedupexp, K.schedulers, K.children, K.deps,
    K.depout}) do
  redis.call('DEL', key)
end
return {1, removed}
