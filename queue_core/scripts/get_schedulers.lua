--[[
get_schedulers: read one job scheduler, or all of them (read only).

KEYS: schedulers

ARGV:
  1  scheduler id, or "" for all

Returns: {id, config JSON, envelope, ...}, one triple per scheduler found.
]]

local out = {}
local function add(sid)
  local values = redis.call('HMGET', K.schedulers, 'c:' .. sid, 'e:' .. sid)
  if values[1] and values[2] then
    out[#out + 1] = sid
    out[#out + 1] = values[1]
    out[#out + 1] = values[2]
  end
end

if ARGV[1] ~= '' then
  add(ARGV[1])
else
  for _, field in ipairs(redis.call('HKEYS', K.schedulers)) do
    if string.sub(field, 1, 2) == 'c:' then
      add(string.sub(field, 3))
    end
  end
end
return out
