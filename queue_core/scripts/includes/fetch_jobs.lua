--@include now_ms
--@include wait_score
--@include quarantine
--@include promote_delayed
--@include limits
--@include events
--@include scheduler
--@include number_text
-- Move up to `max_jobs` ready jobs from `wait` to `active` under a lock token each.
-- Returns a table {now, rate_limit_ttl_ms, next_due_ms_or_-1, refused, quarantined,
-- id, envelope, record, ...}: `refused` counts the jobs of a newer format left in wait
-- for newer workers, `quarantined` lists {id, reason, ...} of corrupt jobs moved to failed.
-- The lock is the job's score in `active` (its deadline) plus `tok` in its record;
-- `tok` is `<token_prefix>:<attempts_started>`, unique to this worker and attempt.
local MAX_REFUSED_SCAN = 64 -- newer-format jobs looked past per call

-- Jobs may start now under the queue's global concurrency (math.huge: no limit).
local function concurrency_room(K)
  local gcc = settings(K).gcc
  if gcc <= 0 then
    return math.huge
  end
  return math.max(0, gcc - redis.call('ZCARD', K.active))
end

-- A job left active (settled, requeued, removed): under a global concurrency limit, an
-- idle worker may now start one of the waiting jobs that the limit held back.
local function wake_if_room(K)
  if settings(K).gcc > 0 and not settings(K).paused and concurrency_room(K) > 0
      and redis.call('ZCARD', K.wait) > 0 then
    wake_worker(K)
  end
end

local function fetch_jobs(K, now, max_jobs, token_prefix, lock_ms, limit_max, limit_ms)
  -- The earliest delayed job, read once: it is read again at the end only if this call
  -- may have changed `delayed` (promoted, quarantined, or made a scheduler's next run).
  -- Constant arguments are written as strings here and on other hot paths: Redis 7.0
  -- turns a Lua number into a command argument with printf("%.17g"), ~0.2 us apiece.
  local first = redis.call('ZRANGE', K.delayed, '0', '0', 'WITHSCORES')
  local delayed_changed = false
  if first[2] and tonumber(first[2]) <= now then
    promote_delayed(K, now)
    delayed_changed = true
  end
  local out = {now, 0, -1, 0, QUARANTINED}
  local config = settings(K)
  if config.rlm > 0 then -- the queue's own rate limit replaces the worker's
    limit_max, limit_ms = config.rlm, config.rld
  end
  local allowed = max_jobs
  if config.paused then
    allowed = 0
  elseif allowed > 0 then
    allowed = math.min(allowed, concurrency_room(K))
  end
  if allowed > 0 then
    local used = limiter_count(K)
    local limited = used >= MANUAL_LIMIT or (limit_max > 0 and used >= limit_max)
    if limited then
      allowed = 0
      if redis.call('ZCARD', K.wait) > 0 then
        local ttl = redis.call('PTTL', K.limiter)
        if ttl < 0 then
          -- A counter without expiry would block forever: give it one window.
          ttl = math.max(limit_ms, 1)
          redis.call('PEXPIRE', K.limiter, ttl)
        end
        out[2] = ttl
      end
    elseif limit_max > 0 then
      allowed = math.min(allowed, limit_max - used)
    end
  end

  local fetched, refused = 0, 0
  while fetched < allowed and refused < MAX_REFUSED_SCAN do
    -- The first `refused` members are newer-format jobs left in place: look past them.
    local ids = redis.call('ZRANGE', K.wait, number_text(refused),
      number_text(refused + allowed - fetched - 1))
    if #ids == 0 then
      break
    end
    for _, id in ipairs(ids) do
      local rec, reason, version = read_record(K, id)
      if version then
        refused = refused + 1
      else
        redis.call('ZREM', K.wait, id)
        local envelope = redis.call('HGET', K.jobs, id)
        if rec and not envelope then
          rec, reason = nil, 'its envelope is missing'
        end
        if rec then
          local attempt = (rec.ats or 0) + 1
          rec.ats = attempt
          rec.pon = now
          rec.tok = token_prefix .. ':' .. attempt
          local encoded = encode_record(rec)
          redis.call('HSET', K.state, id, encoded)
          redis.call('ZADD', K.active, now + lock_ms, id)
          out[#out + 1] = id
          out[#out + 1] = envelope
          out[#out + 1] = encoded
          fetched = fetched + 1
          emit(K, 'active', 'id', id, 'attempt', number_text(attempt))
          if rec.sch then
            scheduler_run_taken(K, id, rec, now)
            delayed_changed = true
          end
        else
          quarantine(K, id, reason, now)
          delayed_changed = true
        end
      end
    end
  end
  out[4] = refused
  if fetched > 0 and limit_max > 0 then
    if redis.call('INCRBY', K.limiter, fetched) == fetched then
      redis.call('PEXPIRE', K.limiter, limit_ms)
    end
  end
  if not config.paused and (refused > 0 or (fetched > 0 and concurrency_room(K) > 0
      and redis.call('ZCARD', K.wait) > 0)) then
    -- More work is ready, or work this worker cannot run: pass the baton to another
    -- idle worker.
    wake_worker(K)
  end

  if delayed_changed then
    first = redis.call('ZRANGE', K.delayed, '0', '0', 'WITHSCORES')
  end
  if first[2] then
    out[3] = tonumber(first[2])
  end
  return out
end

-- The reply of every settling script:
-- {status, now, ttl, next_due, extra, record, refused, quarantined, jobs...}, where record
-- is the job's record as this call left it (JSON), or "" when the job was not settled.
-- `rec` is that record: a table, or already encoded (a string).
local function settle_reply(K, status, extra, rec, now, argv, first)
  local fetch_max = tonumber(argv[first])
  local reply = fetch_jobs(K, now, fetch_max, argv[first + 1], tonumber(argv[first + 2]),
    tonumber(argv[first + 3]), tonumber(argv[first + 4]))
  if (status == 1 or status == 4) and #reply == 5 then -- 4: failed as cancelled
    wake_if_room(K) -- this worker took nothing: let another one use the freed room
  end
  table.insert(reply, 1, status)
  table.insert(reply, 5, extra)
  if type(rec) == 'table' then
    rec = cjson.encode(rec)
  end
  table.insert(reply, 6, rec or '')
  return reply
end
