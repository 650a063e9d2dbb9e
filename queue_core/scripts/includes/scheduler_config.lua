-- A job scheduler's config (queue_core/schedulers.py has the model): JSON in `schedulers`
-- field "c:<id>", its runs' envelope in "e:<id>". Its next run always exists as one job
-- `sched:<id>:<due ms>` (`pending`), delayed until due.
local function scheduler_config(K, sid)
  local raw = redis.call('HGET', K.schedulers, 'c:' .. sid)
  if not raw then
    return nil
  end
  local ok, cfg = pcall(cjson.decode, raw)
  if not ok or type(cfg) ~= 'table' then
    return nil -- not written by these scripts: its runs stop, nothing else breaks
  end
  return cfg
end
