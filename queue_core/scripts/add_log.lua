--[[
add_log: append a line to a job's log, keeping only the newest lines.

KEYS: state logs

ARGV:
  1  job id
  2  the line
  3  how many lines to keep (at least 1)

Returns: the number of lines kept, or 0 when the job does not exist (nothing is written).
]]

local id = ARGV[1]
if redis.call('HEXISTS', K.state, id) == 0 then
  return 0
end
local raw = redis.call('HGET', K.logs, id)
local lines = raw and cjson.decode(raw) or {}
lines[#lines + 1] = ARGV[2]
local keep = tonumber(ARGV[3])
if #lines > keep then
  local kept = {}
  for i = #lines - keep + 1, #lines do
    kept[#kept + 1] = lines[i]
  end
  lines = kept
end
redis.call('HSET', K.logs, id, cjson.encode(lines))
return #lines
