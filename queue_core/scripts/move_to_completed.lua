--[[
move_to_completed: an attempt succeeded. Checks the lock token, stores the return value,
moves the job from active to completed (or removes it, per its retention), trims the
completed set, then fetches up to N next jobs in the same call.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed marker limiter corrupt

ARGV:
  1     job id
  2     lock token of the attempt
  3     serialized return value
  4..8  fetch: N, token prefix, lock ms, rate-limit max, rate-limit window ms (as in
        move_to_active; N = 0 fetches nothing)

Returns: {status, now, rate_limit_ttl_ms, next_due_ms, 0, refused, quarantined, id,
  envelope, record, ...}
  status: 1 completed; 0 lock lost (another worker owns the job, nothing changed);
  2 this attempt was already settled (a retried call); -1 the job no longer exists;
  3 the job's record was corrupt: it was quarantined (moved to failed). refused and
  quarantined as in move_to_active.
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
  redis.call('HSET', K.results, id, ARGV[3])
  redis.call('HDEL', K.errors, id)
  finish(K, id, rec, K.completed, rec.rcn or -1, rec.rca or -1, now)
end
return settle_reply(K, status, 0, now, ARGV, 4)
