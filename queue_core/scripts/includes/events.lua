--@include settings
-- Append one event to the queue's stream, inside the transition that it reports, so that
-- a reader sees every transition once and in order. `...` are field, value pairs after
-- the event's name. The stream is capped near `evl` entries (MAXLEN ~ trims whole
-- macro nodes: cheap, and never shorter than evl). evl 0 turns events off.
local function emit(K, event, ...)
  local length = settings(K).evl
  if length > 0 then
    redis.call('XADD', K.events, 'MAXLEN', '~', length, '*', 'event', event, ...)
  end
end
