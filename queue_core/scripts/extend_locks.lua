--[[
extend_locks: renew the locks of the jobs a worker is running, in one call. A lock is
renewed only while its token still matches and the job is still active. A job whose token
still matches but that left active was just settled by this very attempt (the settle and
the renewal crossed); a job that no longer exists was removed. Neither is reported: the
attempt's own settle call tells the worker what happened. A job whose record is corrupt
is quarantined (moved to failed with a CorruptJobError) and reported as lost. A renewed
job with a cancel request (`cxr`) is reported too: the worker stops it even if the
pub/sub message of queue.cancel never reached it (e.g. sent during a reconnect).

KEYS: jobs state errors wait active delayed failed corrupt events meta children

ARGV:
  1  lock duration in ms (the new deadline is now + this)
  then pairs: job id, lock token

Returns: {lost ids, quarantined, cancel ids}: the ids whose lock another owner holds now
(recovered as stalled, maybe refetched, or quarantined), {id, reason, ...} of quarantined
jobs, and the ids of renewed jobs whose cancel was requested.
]]
--@include allow_when_full
--@include now_ms
--@include quarantine

allow_when_full(K)
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
local lost, cancel = {}, {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local rec, reason, version = read_record(K, id)
  if rec then
    if rec.tok ~= token then
      lost[#lost + 1] = id
    elseif redis.call('ZSCORE', K.active, id) then
      redis.call('ZADD', K.active, 'XX', deadline, id)
      if rec.cxr then
        cancel[#cancel + 1] = id
      end
    end
  elseif version then
    lost[#lost + 1] = id
  elseif redis.call('ZSCORE', K.active, id) or redis.call('HEXISTS', K.jobs, id) == 1 then
    quarantine(K, id, reason, now)
    lost[#lost + 1] = id
  end
end
return {lost, QUARANTINED, cancel}
