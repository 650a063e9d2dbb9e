--[[
upsert_scheduler: create or replace a job scheduler, and make its first run.

KEYS: meta jobs state delayed marker events schedulers

ARGV:
  1  scheduler id
  2  config JSON built by schedulers.py: every (ms) and anchor, or cron, tz, ticks (due
     times ms, ascending) and last (the latest tick computed); start, end, limit (all
     optional), catch_up, rec (the record fields of its runs' options)
  3  the envelope of its runs

Returns: {config JSON, envelope}, as stored.

A new scheduler's first run is its first tick at or after now (or `start`). A replace
withdraws the old pending run if it is still delayed (it never ran: `count` gives it
back) and makes the new config's first tick at or after the earlier of now and the
withdrawn run's due time: the same run when the grid is unchanged (no extra run, none
skipped). An `every` grid without `start` keeps its anchor across upserts of the same
period (an app that upserts at each start keeps its ticks); a new period is anchored at
the withdrawn run's due time: the next run keeps its time, the new period follows it. A
pending run already waiting or active is left to run, and when taken makes no next run
(it is no longer `pending`): the new config's first run is its first tick strictly after
now.
]]
--@include now_ms
--@include scheduler

local now = now_ms()
local sid = ARGV[1]
local cfg = cjson.decode(ARGV[2])
local old = scheduler_config(K, sid)
local withdrawn = nil -- the due time of the old pending run, withdrawn before it ran
cfg.count = 0
if old then
  cfg.count = old.count or 0
  local pending = old.pending
  if pending and redis.call('ZSCORE', K.delayed, pending) then
    redis.call('ZREM', K.delayed, pending)
    redis.call('HDEL', K.jobs, pending)
    redis.call('HDEL', K.state, pending)
    emit(K, 'removed', 'id', pending, 'state', 'delayed')
    cfg.count = math.max(0, cfg.count - 1)
    withdrawn = tonumber(string.match(pending, ':(%d+)$'))
  end
  if cfg.every and not cfg.start and old.every == cfg.every and old.anchor
      and not old.start then
    cfg.anchor = old.anchor
  end
end
if cfg.every and not cfg.anchor then
  cfg.anchor = cfg.start or withdrawn or now
end
redis.call('HSET', K.schedulers, 'e:' .. sid, ARGV[3])
if cfg.start and cfg.start > now then
  scheduler_next(K, sid, cfg, cfg.start, false, now)
elseif withdrawn then
  scheduler_next(K, sid, cfg, math.min(withdrawn, now), false, now)
else
  scheduler_next(K, sid, cfg, now, old ~= nil, now)
end
local encoded = cjson.encode(cfg)
redis.call('HSET', K.schedulers, 'c:' .. sid, encoded)
emit(K, 'scheduler_upserted', 'scheduler', sid, 'replaced', old and 1 or 0)
return {encoded, ARGV[3]}
