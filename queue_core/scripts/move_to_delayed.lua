--[[
move_to_delayed: an attempt ends and the job runs again later: a retry after a failure
(counts as an attempt made), a DelayedError or job.move_to_delayed (does not), or a
RateLimitError (does not; the job goes first when it is due, and a manual rate limit holds
every worker of the queue). A due time in the past makes the job ready at once. A job
with a cancel request (`cxr`) is failed as cancelled instead, never retried (status 4).

KEYS: meta jobs state results errors progress logs wait active delayed failed marker limiter corrupt dedup events schedulers deps depout outbox outboxat children

ARGV:
  1      job id
  2      lock token of the attempt
  3      due: a delay in ms (mode "rel") or an epoch time in ms (mode "abs")
  4      mode: "rel" or "abs"
  5      1 if this attempt counts as made (a failed attempt being retried), else 0
  6      error JSON of the failed attempt, or "" for none
  7      1 to run ahead of its priority once due, else 0
  8      manual rate limit in ms for the whole queue, or 0
  9..13  fetch: N, token prefix, lock ms, rate-limit max, rate-limit window ms

Returns: {status, now, rate_limit_ttl_ms, next_due_ms, due_ms, refused, quarantined, id,
  envelope, record, ...}
  status as in move_to_completed; due_ms is when the job becomes ready.
]]
--@include allow_when_full
--@include lock
--@include fetch_jobs
--@include schedule_delayed
--@include emit_failure
--@include cancel
--@include error_history

allow_when_full(K)
local now = now_ms()
local id = ARGV[1]
local due = tonumber(ARGV[3])
if ARGV[4] == 'rel' then
  due = now + due
end
if tonumber(ARGV[8]) > 0 then
  set_manual_limit(K, tonumber(ARGV[8]))
end

local rec, status = check_lock(K, id, ARGV[2], now)
if status == 1 and rec.cxr then
  status = settle_cancelled(K, id, rec, now, ARGV[5] == '1')
elseif status == 1 then
  redis.call('ZREM', K.active, id)
  if ARGV[5] == '1' then
    rec.atm = (rec.atm or 0) + 1
  end
  if ARGV[6] ~= '' then
    record_error(K, id, ARGV[6], ARGV[5] == '1' and rec.atm or nil, now)
  end
  if ARGV[7] == '1' then
    rec.front = 1
  end
  redis.call('HSET', K.state, id, cjson.encode(rec))
  schedule_delayed(K, id, due)
  if ARGV[5] == '1' then
    emit_failure(K, 'retry_scheduled', id, rec, ARGV[6], 'due', due)
  else
    emit(K, 'delayed', 'id', id, 'due', due)
  end
end
return settle_reply(K, status, due, rec, now, ARGV, 9)
