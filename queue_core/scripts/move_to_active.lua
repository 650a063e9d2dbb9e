--[[
move_to_active: promote due delayed jobs, then move up to N ready jobs from wait to
active, each under a fresh lock, within the queue's rate limit.

KEYS: meta jobs state errors wait active delayed failed marker limiter corrupt events schedulers children

ARGV:
  1  N, the most jobs to take
  2  lock token prefix (unique per worker); a job's token is "<prefix>:<attempt>"
  3  lock duration in ms
  4  rate limit: most jobs per window (0: no limit)
  5  rate limit window in ms

Returns: {now, rate_limit_ttl_ms, next_due_ms, refused, quarantined, id, envelope,
  record, ...}
  rate_limit_ttl_ms is > 0 when jobs are waiting but the rate limit holds them back;
  next_due_ms is the due time of the earliest delayed job, or -1; refused counts the
  waiting jobs of a newer format this worker left for newer workers; quarantined is
  {id, reason, ...} of the corrupt jobs this call moved to failed (CorruptJobError).
]]
--@include allow_when_full
--@include fetch_jobs

allow_when_full(K)
return fetch_jobs(K, now_ms(), tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]))
