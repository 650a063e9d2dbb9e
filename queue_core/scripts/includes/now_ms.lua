-- Redis's own clock in whole milliseconds: every worker and producer shares one clock.
-- The last reading's millisecond and the microseconds within it are kept for
-- finish_score (includes/finish).
local NOW_READ_MS = nil --@per-call
local NOW_READ_US = 0 --@per-call
local function now_ms()
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  NOW_READ_MS = tonumber(t[1]) * 1000 + math.floor(us / 1000)
  NOW_READ_US = us % 1000
  return NOW_READ_MS
end
