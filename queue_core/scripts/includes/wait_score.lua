-- Score of a job entering `wait`. Lower scores run first (ZPOPMIN).
-- A band per priority (higher priority = lower band), then a sequence inside the band:
-- FIFO jobs count up from the middle of the band, jobs sent to the front count down.
-- Priorities lie in [-1e6, 1e6], so the largest score (2e6 * 2^32 + 2^32) stays below
-- 2^53 and is exact in a double. The sequences wrap after 2^31 jobs of one kind.
local function wait_score(K, priority, front)
  local band = (1000000 - priority) * 4294967296
  if front then
    return band + 2147483648 - (redis.call('HINCRBY', K.meta, 'lifo', 1) % 2147483648)
  end
  return band + 2147483648 + (redis.call('HINCRBY', K.meta, 'fifo', 1) % 2147483648)
end

-- Wake one idle worker: it pops this member with BZPOPMIN and then fetches.
local function wake_worker(K)
  redis.call('ZADD', K.marker, 0, '0')
end
