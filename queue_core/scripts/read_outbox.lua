--[[
read_outbox: the oldest messages of the queue's outbox (includes/flow.lua) written at
least `min_age` ms ago (read only): a worker delivers those its own settles wrote at once
(min_age 0), and sweeps up, now and then, those whose delivery a crash interrupted.

KEYS: outbox outboxat

ARGV:
  1  min_age in ms
  2  the most messages to return

Returns: {message, body, ...}: body is a JSON header line, a newline, and a value.
]]
--@include now_ms

local ids = redis.call('ZRANGEBYSCORE', K.outboxat, '-inf', now_ms() - tonumber(ARGV[1]),
  'LIMIT', 0, tonumber(ARGV[2]))
local reply = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', K.outbox, id)
  if body then
    reply[#reply + 1] = id
    reply[#reply + 1] = body
  else
    redis.call('ZREM', K.outboxat, id) -- cannot happen: both are written together
  end
end
return reply
