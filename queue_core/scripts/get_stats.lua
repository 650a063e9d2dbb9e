--[[
get_stats: the number of jobs in each state and the age of the oldest waiting job, read
at one instant (read only). Feeds the queue depth and oldest-job-age metrics.

A waiting job's age runs from when it became ready: its enqueue time, its due time if it
was delayed, or its recovery time if it stalled. The candidates are the job that has waited
longest in each priority band (the first FIFO job and the last LIFO job of the band; at
most 64 bands are looked at), plus a delayed job already due but not yet promoted (no
worker has fetched since it fell due).

KEYS: state wait active delayed completed failed children

ARGV: none

Returns: {waiting, active, delayed, completed, failed, now_ms, oldest_ready_ms or -1,
  waiting_children}
]]
--@include now_ms
--@include record

local BAND = 4294967296
local HALF = 2147483648
local now = now_ms()
local oldest = -1

local function consider(id)
  local raw = redis.call('HGET', K.state, id)
  local rec = raw and decode_record(raw)
  if rec then -- a corrupt record is skipped here; the worker that meets it quarantines it
    local ready = rec.rdy or rec.ts
    if oldest < 0 or ready < oldest then
      oldest = ready
    end
  end
end

local head = redis.call('ZRANGE', K.wait, 0, 0, 'WITHSCORES')
local bands = 0
while head[1] and bands < 64 do
  local low = math.floor(tonumber(head[2]) / BAND) * BAND
  -- '%.0f' keeps every digit; '..' on a number would round it to 14 significant digits.
  local fifo = redis.call('ZRANGEBYSCORE', K.wait, string.format('(%.0f', low + HALF),
    string.format('(%.0f', low + BAND), 'LIMIT', 0, 1)
  local lifo = redis.call('ZREVRANGEBYSCORE', K.wait, low + HALF, low, 'LIMIT', 0, 1)
  if fifo[1] then consider(fifo[1]) end
  if lifo[1] then consider(lifo[1]) end
  head = redis.call('ZRANGEBYSCORE', K.wait, low + BAND, '+inf', 'LIMIT', 0, 1, 'WITHSCORES')
  bands = bands + 1
end

local due = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if due[1] and tonumber(due[2]) <= now and (oldest < 0 or tonumber(due[2]) < oldest) then
  oldest = tonumber(due[2])
end

return {redis.call('ZCARD', K.wait), redis.call('ZCARD', K.active),
  redis.call('ZCARD', K.delayed), redis.call('ZCARD', K.completed),
  redis.call('ZCARD', K.failed), now, oldest, redis.call('ZCARD', K.children)}
