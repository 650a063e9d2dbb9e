--[[
clean: one chunk of cleaning a state: removes wholly (as remove_job does) the jobs of
completed or failed that finished at or before `cutoff` (their score), or of waiting or
delayed that were enqueued at or before it (their record's `ts`; a job whose record is
unreadable is left). Finished sets are read oldest first; waiting and delayed are scanned
from position `start`, the jobs kept by earlier chunks. Emits one `cleaned` event with
the state and the chunk's count when it removed any.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed corrupt dedup events children deps depout outbox outboxat

ARGV:
  1  state: completed, failed, waiting or delayed
  2  grace in ms: jobs younger than this stay
  3  cutoff in ms, or "" for now - grace (the first chunk's, so that chunks agree)
  4  the most jobs to scan in this call
  5  start (waiting and delayed): the position to scan from

Returns: {cutoff, scanned, kept, id, ...}: the removed ids follow; `kept` jobs stayed, so
the next chunk of waiting or delayed starts at `start + kept`.
]]
--@include allow_when_full
--@include now_ms
--@include remove_whole
--@include events

allow_when_full(K) -- removing jobs frees memory: run even when Redis is full

local sets = {completed = K.completed, failed = K.failed, waiting = K.wait, delayed = K.delayed}
local state = ARGV[1]
local set = sets[state]
local now = now_ms()
local cutoff = tonumber(ARGV[3]) or (now - tonumber(ARGV[2]))
local count = tonumber(ARGV[4])
local reply = {cutoff, 0, 0}
local ids
if state == 'completed' or state == 'failed' then
  ids = redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, count)
else
  local start = tonumber(ARGV[5])
  ids = redis.call('ZRANGE', set, start, start + count - 1)
end
reply[2] = #ids
for _, id in ipairs(ids) do
  local old = true
  if state == 'waiting' or state == 'delayed' then
    local rec = read_record(K, id)
    old = rec ~= nil and rec.ts <= cutoff
  end
  if old then
    remove_whole(K, id, now)
    reply[#reply + 1] = id
  else
    reply[3] = reply[3] + 1
  end
end
if #reply > 3 then
  emit(K, 'cleaned', 'state', state, 'count', #reply - 3)
end
return reply
