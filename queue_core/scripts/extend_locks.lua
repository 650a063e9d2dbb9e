--[[
extend_locks: renew the locks of the jobs a worker is running, in one call. A lock is
renewed only while its token still matches and the job is still active.

KEYS: state active

ARGV:
  1  lock duration in ms (the new deadline is now + this)
  then pairs: job id, lock token

Returns: the ids whose lock is lost (recovered as stalled, or settled elsewhere).
]]
--@include now_ms

local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', K.state, id)
  if raw and cjson.decode(raw).tok == token and redis.call('ZSCORE', K.active, id) then
    redis.call('ZADD', K.active, 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
