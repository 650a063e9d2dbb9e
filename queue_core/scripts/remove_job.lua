--[[
remove_job: an operator removes a job and every trace of it (envelope, record, result,
error, progress, logs) and frees the dedup key it holds, in any state but one: an active
job whose lock is still held is running, and is refused (cancel it instead). An active
job whose lock expired (its worker is gone) may be removed; if its worker comes back,
its settle finds the job gone.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed marker corrupt dedup events children deps depout outbox outboxat

ARGV:
  1  job id

Returns: {status, state, header, refusal}: status 1 removed, 0 no such job, 2 refused
(nothing changed; refusal says why); state the state the job was found in; header its
envelope's first line (see includes/job_action).
]]
--@include allow_when_full
--@include now_ms
--@include job_action
--@include remove_whole
--@include wait_score
--@include events

allow_when_full(K) -- removing jobs frees memory: run even when Redis is full

local id = ARGV[1]
local job = read_job(K, id)
if not job then
  return job_action_reply(K, 0, 'unknown', id)
end
local state, score = job[3], job[4]
local now = now_ms()
if state == 'active' and tonumber(score) > now then
  return job_action_reply(K, 2, state, id, 'it is running; cancel it instead')
end
local reply = job_action_reply(K, 1, state, id) -- read before the envelope goes
remove_whole(K, id, now)
emit(K, 'removed', 'id', id, 'state', state)
if state == 'active' and settings(K).gcc > 0 and not settings(K).paused
    and redis.call('ZCARD', K.wait) > 0 then
  wake_worker(K) -- under a global concurrency limit, its slot is free again
end
return reply
