--[[
get_jobs: snapshots of the jobs in some states, a range of each (read only). Waiting jobs
come in the order they will run, active and delayed ones by deadline and due time, and
completed and failed ones newest first.

KEYS: jobs state results errors progress wait active delayed completed failed corrupt children

ARGV:
  1  start index (0-based) within each state
  2  end index (inclusive; -1 is the last)
  3  ... state names: waiting, active, delayed, completed, failed, waiting_children

Returns: {{id, snapshot}, ...} with snapshot as in get_job.
]]
--@include read_job

local sets = {waiting = K.wait, active = K.active, delayed = K.delayed,
  completed = K.completed, failed = K.failed, waiting_children = K.children}
local start, stop = tonumber(ARGV[1]), tonumber(ARGV[2])
local reply = {}
for i = 3, #ARGV do
  local name = ARGV[i]
  local ids
  if name == 'completed' or name == 'failed' then
    ids = redis.call('ZREVRANGE', sets[name], start, stop)
  else
    ids = redis.call('ZRANGE', sets[name], start, stop)
  end
  for _, id in ipairs(ids) do
    local snapshot = read_job(K, id)
    if snapshot then
      reply[#reply + 1] = {id, snapshot}
    end
  end
end
return reply
