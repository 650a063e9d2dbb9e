--[[
update_data: an operator replaces a job's data, in any state: the envelope keeps its
header line (name, options, headers) and takes the new serialized data. A running
attempt keeps the data it started with; later attempts read the new data.

KEYS: jobs state results errors progress wait active delayed completed failed corrupt children

ARGV:
  1  job id
  2  the new serialized data
  3  the largest envelope allowed in bytes (the queue's max_payload_bytes)

Returns: {status, state, header, detail}: status 1 updated, 0 no such job, 2 refused
(its envelope is missing or has no header line: detail says why), 3 too large (detail is
the new envelope's size); nothing changed unless status is 1. state is the state the job
was found in, header its envelope's first line (see includes/job_action).
]]
--@include job_action

local id = ARGV[1]
local job = read_job(K, id)
if not job then
  return job_action_reply(K, 0, 'unknown', id)
end
local state, envelope = job[3], job[1]
local newline = envelope and string.find(envelope, '\n', 1, true)
if not newline then
  return job_action_reply(K, 2, state, id,
    envelope and 'its envelope has no header line' or 'its envelope is missing')
end
local updated = string.sub(envelope, 1, newline) .. ARGV[2]
if #updated > tonumber(ARGV[3]) then
  return job_action_reply(K, 3, state, id, #updated)
end
redis.call('HSET', K.jobs, id, updated)
return job_action_reply(K, 1, state, id)
