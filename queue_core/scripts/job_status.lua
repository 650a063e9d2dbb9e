--[[
job_status: where a wait for jobs to finish starts (read only). In one instant, the events
stream's last id and each job's state, result and error: a finished job answers at once,
and a wait for the others reads the stream after that id, so that no transition falls
between the look and the wait. With no job ids, just the stream's position (QueueEvents
starting from "now").

KEYS: meta events wait active delayed completed failed results errors children

ARGV:
  1..n  job ids

Returns: {last_id, events_length, {state, result, error}, ...}: last_id is the id of the
stream's last entry ("0-0" when it has none; entries are trimmed from the head only, so the
last one is the newest ever added), events_length the queue's events setting (0: events
are off). Per job, in ARGV order: its state (waiting, active, delayed, completed, failed,
waiting_children, or unknown for a job that does not exist), its stored result and its stored error (JSON),
each false when absent.
]]
--@include settings

local sets = {{K.wait, 'waiting'}, {K.active, 'active'}, {K.delayed, 'delayed'},
  {K.completed, 'completed'}, {K.failed, 'failed'}, {K.children, 'waiting_children'}}

local last = redis.call('XREVRANGE', K.events, '+', '-', 'COUNT', 1)
local out = {last[1] and last[1][1] or '0-0', settings(K).evl}
for i = 1, #ARGV do
  local id = ARGV[i]
  local state = 'unknown'
  for _, pair in ipairs(sets) do
    if redis.call('ZSCORE', pair[1], id) then
      state = pair[2]
      break
    end
  end
  local result, error = false, false
  if state == 'completed' then
    result = redis.call('HGET', K.results, id)
  elseif state == 'failed' then
    error = redis.call('HGET', K.errors, id)
  end
  out[#out + 1] = {state, result, error}
end
return out
