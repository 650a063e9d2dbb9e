--[[
promote_job: an operator makes a delayed job ready now: it leaves `delayed` for `wait`
(ahead of its priority if it was sent back by a rate limit or is lifo, as when its time
comes). Refused for a job in any other state, and for one whose record is unreadable.

KEYS: meta jobs state results errors progress wait active delayed completed failed marker corrupt events children

ARGV:
  1  job id

Returns: {status, state, header, refusal}: status 1 promoted, 0 no such job, 2 refused
(nothing changed; refusal says why when the state alone does not); state the state the
job was found in; header its envelope's first line (see includes/job_action).
]]
--@include now_ms
--@include job_action
--@include record
--@include wait_score
--@include events

local id = ARGV[1]
local job = read_job(K, id)
if not job then
  return job_action_reply(K, 0, 'unknown', id)
end
local state = job[3]
if state ~= 'delayed' then
  return job_action_reply(K, 2, state, id)
end
local rec, reason, version = read_record(K, id)
if not rec then
  return job_action_reply(K, 2, state, id,
    version and 'it was written by a newer queue_core' or 'it is corrupt (' .. reason .. ')')
end
redis.call('ZREM', K.delayed, id)
local front = rec.front == 1 or rec.lifo == 1
rec.front = nil
rec.rdy = now_ms()
redis.call('HSET', K.state, id, cjson.encode(rec))
redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, front), id)
emit(K, 'waiting', 'id', id, 'promoted', 1)
if not settings(K).paused then
  wake_worker(K)
end
return job_action_reply(K, 1, state, id)
