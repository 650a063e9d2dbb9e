--[[
cancel_job: cancel a job (queue.cancel). A waiting, delayed or waiting_children job
leaves its set and ends as failed with a JobCancelledError, not retried (its failed-set
retention applies, its dedup key is released); a parent's unfinished children are
cancelled in turn (through the outbox, includes/flow.lua). A running job is asked to stop: the reason is stored in its
record (`cxr`) and its id is published on the queue's cancel channel, where the worker
that holds it hears it; whichever script settles it next fails it as cancelled
(includes/cancel.lua), and lock renewal reports the request again in case the message was
lost. A finished job is refused. Runs when Redis is full: it is how work is stopped.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed corrupt dedup events cancel children deps depout outbox outboxat

`cancel` is the queue's pub/sub channel, never a stored key; it is passed as a key so
that its name, like every name of the queue, comes from KEYS (and shares the hash tag).

ARGV:
  1  job id
  2  reason, or "" (the error's message is then "cancelled")

Returns: {status, state, header, refusal} (includes/job_action.lua): status 1 done (state
  waiting or delayed: the job is cancelled; active: the request is sent), 0 no such job,
  2 refused: completed or failed, or, with `refusal` saying why, a job of a newer
  queue_core (left to its workers) or one whose record is corrupt (it was quarantined).
]]
--@include allow_when_full
--@include now_ms
--@include job_action
--@include quarantine
--@include cancel

local id, reason = ARGV[1], ARGV[2]
local state = job_state(K, id)
if state == 'unknown' then
  return job_action_reply(K, 0, state, id)
end
if state == 'completed' or state == 'failed' then
  return job_action_reply(K, 2, state, id)
end
allow_when_full(K)
local now = now_ms()
local rec, why, version = read_record(K, id)
if version then
  return job_action_reply(K, 2, state, id,
    'it was written by a newer queue_core (format ' .. tostring(version) .. ')')
elseif not rec then
  quarantine(K, id, why, now)
  return job_action_reply(K, 2, state, id, 'it is corrupt (' .. why .. '); it was quarantined')
end
if state == 'active' then
  rec.cxr = reason
  redis.call('HSET', K.state, id, cjson.encode(rec))
  redis.call('PUBLISH', K.cancel, id)
else
  if state == 'waiting' then
    redis.call('ZREM', K.wait, id)
  elseif state == 'waiting_children' then
    redis.call('ZREM', K.children, id)
    cancel_children(K, id, reason ~= '' and reason or 'its parent was cancelled', now)
  else
    redis.call('ZREM', K.delayed, id)
  end
  finish_cancelled(K, id, rec, now, reason, false)
end
return job_action_reply(K, 1, state, id)
