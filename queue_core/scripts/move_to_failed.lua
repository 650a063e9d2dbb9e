--[[
move_to_failed: an attempt failed and no retry follows. Checks the lock token, records the
error (with the job's earlier ones: includes/error_history), moves the job from active to
failed (the dead-letter set) or removes it per its retention, trims the failed set, then
fetches up to N next jobs in the same call. A job with a cancel request (`cxr`) fails as
cancelled whatever the error (status 4).

KEYS: meta jobs state results errors progress logs wait active delayed failed marker limiter corrupt dedup events schedulers deps depout outbox outboxat children

ARGV:
  1     job id
  2     lock token of the attempt
  3     error as JSON: {"type": ..., "message": ..., "stack": ...}
  4..8  fetch: N, token prefix, lock ms, rate-limit max, rate-limit window ms

Returns: {status, now, rate_limit_ttl_ms, next_due_ms, 0, refused, quarantined, id,
  envelope, record, ...}
  status as in move_to_completed.
]]
--@include allow_when_full
--@include lock
--@include finish
--@include fetch_jobs
--@include emit_failure
--@include cancel
--@include error_history

allow_when_full(K)
local now = now_ms()
local id = ARGV[1]
local rec, status = check_lock(K, id, ARGV[2], now)
local final -- the record as finish stored it (JSON)
if status == 1 and rec.cxr then
  status = settle_cancelled(K, id, rec, now, true)
elseif status == 1 then
  record_error(K, id, ARGV[3], (rec.atm or 0) + 1, now)
  final = finish(K, id, rec, K.failed, rec.rfn or -1, rec.rfa or -1, now)
  emit_failure(K, 'failed', id, rec, ARGV[3])
end
return settle_reply(K, status, 0, final or rec, now, ARGV, 4)
