--[[
retry_jobs: one chunk of a bulk retry. Scans the jobs of the failed (or completed) set
that finished at or before `cutoff`, oldest first, from position `start`, and retries
each one whose name matches, as retry_job does; the others (another name, or a job
retry_job would refuse) stay, so the next chunk starts at `start + skipped`. The cutoff
(the first chunk's time) keeps jobs that fail again during the bulk retry out of it.

KEYS: meta jobs state results errors progress wait completed failed marker corrupt events dedup

ARGV:
  1  the set: failed or completed
  2  job name to match, or "" for every job
  3  the most jobs to scan
  4  start: the position in the set to scan from (the jobs skipped by earlier chunks)
  5  cutoff: finish time in ms, or "" for now

Returns: {retried, skipped, scanned, cutoff}
]]
--@include now_ms
--@include record
--@include retry_finished

-- The job's name, from its envelope's header line only (the data is never decoded).
local function job_name(K, id)
  local envelope = redis.call('HGET', K.jobs, id)
  local newline = envelope and string.find(envelope, '\n', 1, true)
  if not newline then
    return nil
  end
  local ok, header = pcall(cjson.decode, string.sub(envelope, 1, newline - 1))
  return ok and type(header) == 'table' and header.name or nil
end

local set = K.failed
if ARGV[1] == 'completed' then
  set = K.completed
end
local name = ARGV[2]
local now = now_ms()
local cutoff = tonumber(ARGV[5]) or now
local ids = redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', tonumber(ARGV[4]),
  tonumber(ARGV[3]))
local retried, skipped = 0, 0
for _, id in ipairs(ids) do
  local rec, reason, version
  local retry = name == '' or job_name(K, id) == name
  if retry then
    rec, reason, version = read_record(K, id)
    retry = not retry_refusal(K, id, rec, reason, version)
  end
  if retry then
    retry_finished(K, id, rec, set, now)
    retried = retried + 1
  else
    skipped = skipped + 1
  end
end
if retried > 0 and not settings(K).paused then
  wake_worker(K)
end
return {retried, skipped, #ids, cutoff}
