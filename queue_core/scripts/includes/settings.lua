-- The queue's settings, kept in `meta` so that every worker of every process obeys them
-- without repeating them: paused (1 or absent), gcc (most jobs active at once across all
-- workers, absent: no limit), rlm/rld (rate limit: most jobs started per window of rld
-- ms; they replace a worker's own limiter), evl (events stream length; absent: the
-- default, 0: no events). Read once per script call.
local EVENTS_DEFAULT_LENGTH = 10000
local SETTINGS = nil --@per-call

local function settings(K)
  if not SETTINGS then
    local raw = redis.call('HMGET', K.meta, 'paused', 'gcc', 'rlm', 'rld', 'evl')
    SETTINGS = {
      paused = raw[1] == '1',
      gcc = tonumber(raw[2] or '0') or 0,
      rlm = tonumber(raw[3] or '0') or 0,
      rld = tonumber(raw[4] or '0') or 0,
      evl = tonumber(raw[5] or EVENTS_DEFAULT_LENGTH) or EVENTS_DEFAULT_LENGTH,
    }
    SETTINGS.evl_text = tostring(SETTINGS.evl) -- XADD's MAXLEN, made text once per call
  end
  return SETTINGS
end
