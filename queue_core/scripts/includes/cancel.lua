--@include finish
--@include events
--@include error_history
-- Cancellation (queue.cancel): a job that waits ends at once; a running one carries the
-- request in its record (`cxr`, the reason) until it settles. Whichever script settles a
-- job with `cxr` ends it here, so a cancel the worker did not see in time still holds.

-- Status of a settle that found a cancel request and failed the job as cancelled instead
-- of what the worker asked for (see move_to_completed's header).
local SETTLED_CANCELLED = 4

-- End a job for good as cancelled: failed with a JobCancelledError, never retried, its
-- dedup key released, its failed-set retention applied. `attempt_made` says whether an
-- attempt ended with it (finish counts one; waiting, delayed or stalled jobs made none).
-- `rec.cxr` is dropped from the stored record, so that a job run again later (an
-- operator's retry) carries no stale request. Returns the message (the reason).
local function finish_cancelled(K, id, rec, now, reason, attempt_made)
  local message = reason
  if message == nil or message == '' then
    message = 'cancelled'
  end
  rec.cxr = nil
  record_error(K, id, {type = 'JobCancelledError', message = message, stack = ''},
    attempt_made and (rec.atm or 0) + 1 or nil, now)
  if not attempt_made then
    rec.atm = (rec.atm or 0) - 1
  end
  finish(K, id, rec, K.failed, rec.rfn or -1, rec.rfa or -1, now)
  emit(K, 'cancelled', 'id', id, 'reason', message)
  return message
end

-- A settle of an attempt whose job has a cancel request: fail it as cancelled. The
-- record of the reply keeps the reason in `cxr` (the stored one does not), for the worker.
local function settle_cancelled(K, id, rec, now, attempt_made)
  local reason = rec.cxr
  rec.cxr = finish_cancelled(K, id, rec, now, reason, attempt_made)
  return SETTLED_CANCELLED
end
