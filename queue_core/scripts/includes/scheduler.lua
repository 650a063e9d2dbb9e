--@include record
--@include schedule_delayed
--@include events
--@include scheduler_config
-- Job schedulers (queue_core/schedulers.py has the model): the pending run of a scheduler
-- is made here, and the run after it when a worker takes that one, in the same script.

local function save_scheduler(K, sid, cfg)
  redis.call('HSET', K.schedulers, 'c:' .. sid, cjson.encode(cfg))
end

-- The first tick of `cfg` at or after `after` (strictly after when `strict`), or nil when
-- a cron scheduler's precomputed ticks hold none (the worker refills them).
local function scheduler_tick(cfg, after, strict)
  if strict then
    after = after + 1
  end
  if cfg.every then
    if after <= cfg.anchor then
      return cfg.anchor
    end
    return cfg.anchor + math.ceil((after - cfg.anchor) / cfg.every) * cfg.every
  end
  local left = {}
  local found = nil
  for _, tick in ipairs(cfg.ticks) do
    if found then
      left[#left + 1] = tick
    elseif tick >= after then
      found = tick
    end
  end
  if found then
    cfg.ticks = left -- the ticks after the one taken
  end
  return found
end

-- Make the run due at `due` (ms), the scheduler's one pending run.
local function scheduler_create_run(K, sid, cfg, due, now)
  local id = 'sched:' .. sid .. ':' .. string.format('%d', due)
  if redis.call('HEXISTS', K.jobs, id) == 0 then
    local rec = {v = RECORD_VERSION, ts = now, sch = sid, due = due}
    for field, value in pairs(cfg.rec) do -- priority, lifo, retention of the options
      rec[field] = value
    end
    redis.call('HSET', K.jobs, id, redis.call('HGET', K.schedulers, 'e:' .. sid))
    redis.call('HSET', K.state, id, cjson.encode(rec))
    schedule_delayed(K, id, due)
    emit(K, 'scheduled', 'id', id, 'scheduler', sid, 'due', due)
  end
  cfg.count = cfg.count + 1
  cfg.pending = id
end

-- Make the scheduler's next run: its first tick at or after `after` (strictly after when
-- `strict`), unless `end` or `limit` forbids it. No tick available (a cron scheduler short
-- of precomputed ticks): `starved` keeps `after` for the refill to resume from.
local function scheduler_next(K, sid, cfg, after, strict, now)
  cfg.pending = nil
  cfg.starved = nil
  if cfg.limit and cfg.count >= cfg.limit then
    return
  end
  local due = scheduler_tick(cfg, after, strict)
  if not due then
    cfg.starved = after
    cfg.strict = strict
    return
  end
  if cfg['end'] and due > cfg['end'] then
    return
  end
  scheduler_create_run(K, sid, cfg, due, now)
end

-- A worker took job `id` of scheduler `rec.sch`: if it is the pending run, make the next.
-- catch_up: the tick right after this run's; else the first tick after now (one run
-- after a downtime, however many ticks it missed).
local function scheduler_run_taken(K, id, rec, now)
  local cfg = scheduler_config(K, rec.sch)
  if not cfg or cfg.pending ~= id then
    return -- removed, or a run already taken before (a retry, a stalled run)
  end
  if cfg.catch_up and rec.due then
    scheduler_next(K, rec.sch, cfg, rec.due, true, now)
  else
    scheduler_next(K, rec.sch, cfg, now, true, now)
  end
  save_scheduler(K, rec.sch, cfg)
end
