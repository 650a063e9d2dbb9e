--@include settings
-- Append one event to the queue's stream, inside the transition that it reports, so that
-- a reader sees every transition once and in order. `...` are field, value pairs after
-- the event's name. The stream is capped near `evl` entries (MAXLEN ~ trims whole
-- macro nodes: cheap, and never shorter than evl). The first event of a call trims, and
-- every TRIM_EVERY-th after it (a bulk add's); the others are appended as they are, so
-- the stream holds at most TRIM_EVERY - 1 more events than a trim leaves, and a shared
-- settle's events trim once. evl 0 turns events off.
local TRIM_EVERY = 64
local EVENTS_IN_CALL = 0 --@per-call

local function emit(K, event, ...)
  local config = settings(K)
  if config.evl <= 0 then
    return
  end
  EVENTS_IN_CALL = EVENTS_IN_CALL + 1
  if EVENTS_IN_CALL % TRIM_EVERY == 1 then
    redis.call('XADD', K.events, 'MAXLEN', '~', config.evl_text, '*', 'event', event, ...)
  else
    redis.call('XADD', K.events, '*', 'event', event, ...)
  end
end
