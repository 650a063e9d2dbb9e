--[[
drain: one chunk of draining a queue: removes up to `count` waiting jobs wholly (as
remove_job does), then, if asked and the chunk has room left, delayed jobs. Active jobs
are never touched. Emits one `drained` event with the chunk's count when it removed any.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed corrupt dedup events children deps depout outbox outboxat

ARGV:
  1  the most jobs to remove in this call
  2  1 to remove delayed jobs too, else 0

Returns: the number of jobs removed (fewer than `count`: nothing is left to drain).
]]
--@include allow_when_full
--@include remove_whole
--@include events
--@include now_ms

allow_when_full(K) -- removing jobs frees memory: run even when Redis is full

local now = now_ms()

-- Remove the first `room` jobs of `set`; returns how many it removed.
local function remove_first(K, set, room)
  local ids = redis.call('ZRANGE', set, 0, room - 1)
  for _, id in ipairs(ids) do
    remove_whole(K, id, now)
  end
  return #ids
end

local count = tonumber(ARGV[1])
local removed = remove_first(K, K.wait, count)
if ARGV[2] == '1' and removed < count then
  removed = removed + remove_first(K, K.delayed, count - removed)
end
if removed > 0 then
  emit(K, 'drained', 'count', removed)
end
return removed
