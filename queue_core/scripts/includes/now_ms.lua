-- Redis's own clock in whole milliseconds: every worker and producer shares one clock.
-- The microseconds of the last reading are kept for finish_score (includes/finish).
local NOW_CLOCK = nil --@per-call
local function now_ms()
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  local ms = tonumber(t[1]) * 1000 + math.floor(us / 1000)
  NOW_CLOCK = {ms, us % 1000}
  return ms
end
