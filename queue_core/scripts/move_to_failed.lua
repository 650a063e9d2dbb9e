--[[
move_to_failed: an attempt failed and no retry follows. Checks the lock token, records the
error, moves the job from active to failed (the dead-letter set) or removes it per its
retention, trims the failed set, then fetches up to N next jobs in the same call.

KEYS: meta jobs state results errors progress logs wait active delayed failed marker limiter corrupt

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

allow_when_full(K)
local now = now_ms()
local id = ARGV[1]
local rec, status = check_lock(K, id, ARGV[2], now)
if rec then
  redis.call('HSET', K.errors, id, ARGV[3])
  finish(K, id, rec, K.failed, rec.rfn or -1, rec.rfa or -1, now)
end
return settle_reply(K, status, 0, now, ARGV, 4)
