--[[
ack_outbox: delete delivered outbox messages (includes/flow.lua), each only if it still
holds the body that was delivered: an outcome written meanwhile (the child was retried
and finished again) stays, to be delivered in turn.

KEYS: outbox outboxat

ARGV: message, body, message, body, ...

Returns: the number of messages deleted.
]]

local deleted = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', K.outbox, ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', K.outbox, ARGV[i])
    redis.call('ZREM', K.outboxat, ARGV[i])
    deleted = deleted + 1
  end
end
return deleted
