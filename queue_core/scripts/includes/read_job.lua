-- A consistent snapshot of one job, or false when it does not exist:
-- {envelope, record, state, score, result, error, progress, corrupt}. `state` is derived
-- from the set that holds the job, `score` is its score there (due time, deadline, finish
-- time). A job whose envelope or record is missing while it sits in a state is returned
-- with that part false, so that readers report it as corrupt rather than as absent.
-- `corrupt` is the unreadable record a quarantined job had.
local function job_state(K, id)
  local sets = {{K.wait, 'waiting'}, {K.active, 'active'}, {K.delayed, 'delayed'},
    {K.completed, 'completed'}, {K.failed, 'failed'}, {K.children, 'waiting_children'}}
  for _, pair in ipairs(sets) do
    local score = redis.call('ZSCORE', pair[1], id)
    if score then
      return pair[2], score
    end
  end
  return 'unknown', false
end

local function read_job(K, id)
  local envelope = redis.call('HGET', K.jobs, id)
  local rec = redis.call('HGET', K.state, id)
  local state, score = job_state(K, id)
  if not envelope and not rec and state == 'unknown' then
    return false
  end
  return {envelope, rec, state, score,
    redis.call('HGET', K.results, id), redis.call('HGET', K.errors, id),
    redis.call('HGET', K.progress, id), redis.call('HGET', K.corrupt, id)}
end
