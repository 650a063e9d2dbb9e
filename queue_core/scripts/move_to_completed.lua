--[[
move_to_completed: an attempt succeeded. Checks the lock token, stores the return value,
moves the job from active to completed (or removes it, per its retention), trims the
completed set, then fetches up to N next jobs in the same call. The errors of its failed
attempts stay, as history (includes/error_history). A job with a cancel request (`cxr`,
queue.cancel) still completes: the work was done and its result is kept; the request is
dropped.

KEYS: meta jobs state results errors progress logs wait active delayed completed failed marker limiter corrupt dedup events schedulers deps depout outbox outboxat children

ARGV: one group of 8 per job completed (a worker's completions that leave in the same
write share one call; see pipeline.py):
  1     job id
  2     lock token of the attempt
  3     serialized return value
  4..8  fetch: N, token prefix, lock ms, rate-limit max, rate-limit window ms (as in
        move_to_active; N = 0 fetches nothing)
BATCH: 8

Returns: for one group, {status, now, rate_limit_ttl_ms, next_due_ms, 0, refused,
  quarantined, id, envelope, record, ...}; for several, a list of those, one per group in
  order (each group fetches with its own token prefix).
  status: 1 completed; 0 lock lost (another worker owns the job, nothing changed);
  2 this attempt was already settled (a retried call); -1 the job no longer exists;
  3 the job's record was corrupt: it was quarantined (moved to failed); 4 (the other
  settling scripts) the job had a cancel request: it was failed as cancelled instead
  (includes/cancel.lua), the reply's record carrying the reason in `cxr`. refused and
  quarantined as in move_to_active.
]]
--@include allow_when_full
--@include lock
--@include finish
--@include fetch_jobs
--@include events
--@include error_history
--@include number_text

local MAX_EVENT_VALUE_BYTES = 16384
local GROUP = 8 -- ARGV per job

allow_when_full(K)
local now = now_ms()

local function complete(first)
  local id, value = ARGV[first], ARGV[first + 2]
  local rec, status = check_lock(K, id, ARGV[first + 1], now, true) -- 1: out of active
  local final -- the record as finish stored it (JSON)
  if status == 1 then
    rec.cxr = nil
    redis.call('HSET', K.results, id, value)
    archive_errors(K, id) -- the errors of its failed attempts stay, as history
    final = finish(K, id, rec, K.completed, rec.rcn or -1, rec.rca or -1, now, true)
    if #value <= MAX_EVENT_VALUE_BYTES then
      emit(K, 'completed', 'id', id, 'attempts', number_text(rec.atm), 'value', value)
    else -- too large to copy into the stream: readers fetch it from `results` if kept
      emit(K, 'completed', 'id', id, 'attempts', number_text(rec.atm), 'large', '1')
    end
  end
  return settle_reply(K, status, 0, final or rec, now, ARGV, first + 3)
end

if #ARGV == GROUP then
  return complete(1)
end
local replies = {}
for first = 1, #ARGV, GROUP do
  QUARANTINED = {} -- each group's reply lists the jobs its own fetch quarantined
  replies[#replies + 1] = complete(first)
end
return replies
