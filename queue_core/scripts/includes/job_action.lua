-- The reply of an action on one job: {status, state, header}: status 1 done, 0 no such
-- job, 2 refused in its state (nothing changed); state is the state the job was found in;
-- header is the first line of its envelope (name, options, headers: trace context), so
-- that instrumentation can link the action to the job's trace.
--@include read_job

local function envelope_header(K, id)
  local envelope = redis.call('HGET', K.jobs, id)
  if not envelope then
    return ''
  end
  local newline = string.find(envelope, '\n', 1, true)
  return newline and string.sub(envelope, 1, newline - 1) or ''
end

-- `detail` (optional) is a 4th element: why a refusal, or a figure the caller reads.
local function job_action_reply(K, status, state, id, detail)
  return {status, state, envelope_header(K, id), detail}
end
