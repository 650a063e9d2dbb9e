--[[
retry_job: an operator sends a failed or completed job back to waiting, keeping its id:
its attempts, stalls, lock and times are reset and its result and progress removed
(its data, options, logs and past errors stay, the latest error as history: it has no
current error); it enters wait at its priority. Refused for a job that is active, waiting
or delayed, and for one whose record is unreadable or was quarantined. A job that held a
dedup key (without a ttl) takes it again if it is free.

KEYS: meta jobs state results errors progress wait active delayed completed failed marker corrupt events dedup children

ARGV:
  1  job id

Returns: {status, state, header, refusal}: status 1 retried, 0 no such job, 2 refused
(nothing changed; refusal says why when the state alone does not); state the state the
job was found in; header its envelope's first line (see includes/job_action).
]]
--@include now_ms
--@include job_action
--@include record
--@include retry_finished

local id = ARGV[1]
local job = read_job(K, id)
if not job then
  return job_action_reply(K, 0, 'unknown', id)
end
local state = job[3]
if state ~= 'failed' and state ~= 'completed' then
  return job_action_reply(K, 2, state, id)
end
local rec, reason, version = read_record(K, id)
local refusal = retry_refusal(K, id, rec, reason, version)
if refusal then
  return job_action_reply(K, 2, state, id, refusal)
end
local set = K.completed
if state == 'failed' then
  set = K.failed
end
retry_finished(K, id, rec, set, now_ms())
if not settings(K).paused then
  wake_worker(K)
end
return job_action_reply(K, 1, state, id)
