--[[
recover_stalled: find active jobs whose lock deadline has passed (their worker died, hung
or lost its network) and put them back in wait; a job that stalled more than the allowed
number of times goes to failed instead, with a StalledJobError. The old lock token is
cleared, so the worker that lost the job can no longer settle it. A job whose record is
corrupt is quarantined (failed, CorruptJobError); one of a newer format is left to the
newer workers. A job with a cancel request (`cxr`) is failed as cancelled, not requeued.

KEYS: meta jobs state results errors progress logs wait active delayed failed marker corrupt dedup events deps depout outbox outboxat children

ARGV:
  1  max stalled count: a job may stall this many times and still be retried
  2  the most jobs to recover in this call

Returns: {{requeued ids}, {failed ids}, quarantined, {cancelled ids}}, quarantined being
  {id, reason, ...}
]]
--@include allow_when_full
--@include now_ms
--@include requeue
--@include quarantine
--@include finish
--@include events
--@include cancel
--@include error_history

allow_when_full(K)
local now = now_ms()
local max_stalled = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued, failed, cancelled = {}, {}, {}
for _, id in ipairs(expired) do
  local rec, reason, version = read_record(K, id)
  if version then
    -- A newer queue_core's job: its workers recover it.
  elseif not rec and redis.call('HEXISTS', K.jobs, id) == 0
      and redis.call('HEXISTS', K.state, id) == 0 then
    redis.call('ZREM', K.active, id) -- nothing left of it but its id
  elseif not rec then
    quarantine(K, id, reason, now)
  else
    rec.stc = (rec.stc or 0) + 1
    rec.tok = nil
    if rec.cxr then
      emit(K, 'stalled', 'id', id, 'count', rec.stc)
      finish_cancelled(K, id, rec, now, rec.cxr, false)
      cancelled[#cancelled + 1] = id
    elseif rec.stc > max_stalled then
      local message = 'job stalled ' .. rec.stc .. ' times (max_stalled_count is '
        .. max_stalled .. '); its worker died or stopped renewing the lock'
      record_error(K, id, {type = 'StalledJobError', message = message, stack = ''}, nil, now)
      -- finish() counts an attempt made; a stalled attempt never finished, so undo it.
      rec.atm = (rec.atm or 0) - 1
      finish(K, id, rec, K.failed, rec.rfn or -1, rec.rfa or -1, now)
      failed[#failed + 1] = id
      emit(K, 'stalled', 'id', id, 'count', rec.stc)
      emit(K, 'failed', 'id', id, 'attempts', rec.atm, 'type', 'StalledJobError',
        'reason', message)
    else
      requeue(K, id, rec, now, false)
      requeued[#requeued + 1] = id
      emit(K, 'stalled', 'id', id, 'count', rec.stc)
      emit(K, 'waiting', 'id', id)
    end
  end
end
if #requeued > 0 then
  wake_worker(K)
end
return {requeued, failed, QUARANTINED, cancelled}
