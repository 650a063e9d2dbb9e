--[[
refill_ticks: append precomputed ticks to a cron scheduler that is running short.

KEYS: meta jobs state delayed marker events schedulers

ARGV:
  1  scheduler id
  2  the `last` tick the new ticks were computed from (ms); another value: someone
     refilled first, nothing is done (idempotent)
  3+ the new ticks (ms, ascending, each after ARGV[2])

Returns: 1 if the ticks were added, else 0. A scheduler that ran out of ticks
(`starved`) makes its next run from them.
]]
--@include now_ms
--@include scheduler

local sid = ARGV[1]
local cfg = scheduler_config(K, sid)
if not cfg or not cfg.cron or cfg.last ~= tonumber(ARGV[2]) or #ARGV < 3 then
  return 0
end
for i = 3, #ARGV do
  cfg.ticks[#cfg.ticks + 1] = tonumber(ARGV[i])
end
cfg.last = tonumber(ARGV[#ARGV])
if cfg.starved then
  scheduler_next(K, sid, cfg, cfg.starved, cfg.strict, now_ms())
end
save_scheduler(K, sid, cfg)
return 1
