-- Score of a job entering `wait`. Lower scores run first (ZPOPMIN).
-- A band per priority (higher priority = lower band), then a sequence inside the band:
-- FIFO jobs count up from the middle of the band, jobs sent to the front count down.
-- Priorities lie in [-1e6, 1e6], so the largest score (2e6 * 2^32 + 2^32) stays below
-- 2^53 and is exact in a double. The sequences wrap after 2^31 jobs of one kind.
-- A corrupt counter (not an integer) is started again rather than failing the script half
-- way: only the order among jobs of one priority can suffer, never a job.
local function next_sequence(K, field)
  local seq = redis.pcall('HINCRBY', K.meta, field, 1)
  if type(seq) == 'table' then
    redis.log(redis.LOG_WARNING, 'queue_core: counter ' .. field .. ' of ' .. K.meta
      .. ' was not an integer; it starts again')
    redis.call('HSET', K.meta, field, 1)
    seq = 1
  end
  return seq
end

local function wait_score(K, priority, front)
  local band = (1000000 - priority) * 4294967296
  if front then
    return band + 2147483648 - (next_sequence(K, 'lifo') % 2147483648)
  end
  return band + 2147483648 + (next_sequence(K, 'fifo') % 2147483648)
end

-- Wake one idle worker: it pops this member with BZPOPMIN and then fetches.
local function wake_worker(K)
  redis.call('ZADD', K.marker, '0', '0')
end
