--[[
get_job: a consistent snapshot of one job (read only).

KEYS: jobs state results errors progress wait active delayed completed failed corrupt children

ARGV:
  1  job id

Returns: {envelope, record, state, score, result, error, progress, corrupt}, or nil when
the job does not exist (see read_job).
]]
--@include read_job

return read_job(K, ARGV[1])
