-- Rate limits. `limiter` holds the number of jobs started in the current window and
-- expires with the window; a manual hold sets it to MANUAL_LIMIT for the hold's duration.
local MANUAL_LIMIT = 1125899906842624 -- 2^50: the limiter value of a manual rate limit

-- Hold every worker of the queue for `ms`, unless a longer manual hold is already set.
local function set_manual_limit(K, ms)
  local current = tonumber(redis.call('GET', K.limiter) or '0')
  if current < MANUAL_LIMIT or redis.call('PTTL', K.limiter) < ms then
    redis.call('SET', K.limiter, MANUAL_LIMIT, 'PX', ms)
  end
end
