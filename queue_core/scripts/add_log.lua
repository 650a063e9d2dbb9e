--[[
add_log: append a line to a job's log, keeping only the newest lines.

KEYS: state logs

ARGV:
  1  job id
  2  the line
  3  how many lines to keep (at least 1)

Returns: the number of lines kept, or 0 when the job does not exist (nothing is written).
]]

-- A log as these scripts write it: a JSON array of strings.
local function is_log(value)
  if type(value) ~= 'table' then
    return false
  end
  local n = 0
  for key, line in pairs(value) do
    if type(key) ~= 'number' or type(line) ~= 'string' then
      return false
    end
    n = n + 1
  end
  return n == #value
end

local id = ARGV[1]
if redis.call('HEXISTS', K.state, id) == 0 then
  return 0
end
local raw = redis.call('HGET', K.logs, id)
local lines = {}
if raw then
  local ok, stored = pcall(cjson.decode, raw)
  if ok and is_log(stored) then
    lines = stored
  else
    -- Not a log these scripts wrote: start a new one rather than fail the job's logging.
    lines = {'[queue_core] the stored log could not be read (' .. #raw .. ' bytes); it was replaced'}
  end
end
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
