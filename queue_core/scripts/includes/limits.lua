-- Rate limits. `limiter` holds the number of jobs started in the current window and
-- expires with the window; a manual hold sets it to MANUAL_LIMIT for the hold's duration.
local MANUAL_LIMIT = 1125899906842624 -- 2^50: the limiter value of a manual rate limit

-- The jobs started in the current window. A value that is not a number is not ours: the
-- counter is dropped (one window's count is lost) rather than failing every fetch.
local function limiter_count(K)
  local raw = redis.call('GET', K.limiter)
  local used = tonumber(raw or '0')
  if not used then
    redis.call('DEL', K.limiter)
    used = 0
  end
  return used
end

-- Hold every worker of the queue for `ms`, unless a longer manual hold is already set.
local function set_manual_limit(K, ms)
  local current = limiter_count(K)
  if current < MANUAL_LIMIT or redis.call('PTTL', K.limiter) < ms then
    redis.call('SET', K.limiter, MANUAL_LIMIT, 'PX', ms)
  end
end
