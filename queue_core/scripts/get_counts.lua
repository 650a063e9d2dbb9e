--[[
get_counts: the number of jobs in each state, read at one instant (read only).

KEYS: wait active delayed completed failed children

ARGV: none

Returns: {waiting, active, delayed, completed, failed, waiting_children}
]]

return {redis.call('ZCARD', K.wait), redis.call('ZCARD', K.active),
  redis.call('ZCARD', K.delayed), redis.call('ZCARD', K.completed),
  redis.call('ZCARD', K.failed), redis.call('ZCARD', K.children)}
