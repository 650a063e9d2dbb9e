--[[
extend_locks: renew the locks of the jobs a worker is running, in one call. A lock is
renewed only while its token still matches and the job is still active. A job whose token
still matches but that left active was just settled by this very attempt (the settle and
the renewal crossed); a job that no longer exists was removed. Neither is reported: the
attempt's own settle call tells the worker what happened.

KEYS: state active

ARGV:
  1  lock duration in ms (the new deadline is now + this)
  then pairs: job id, lock token

Returns: the ids whose lock another owner holds now (recovered as stalled, maybe refetched).
]]
--@include now_ms

local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', K.state, id)
  if raw then
    if cjson.decode(raw).tok ~= token then
      lost[#lost + 1] = id
    elseif redis.call('ZSCORE', K.active, id) then
      redis.call('ZADD', K.active, 'XX', deadline, id)
    end
  end
end
return lost
