-- Redis refuses a script under maxmemory (policy noeviction) only while the script has
-- written nothing yet: once any write command ran, the rest may run. The worker's scripts
-- (fetching, settling, lock renewal, stalled recovery) and an operator's removals (remove,
-- clean, drain, obliterate, remove a scheduler) must run when Redis is full, since they
-- are what frees memory again (finished jobs leave, retention trims): this first write can
-- never grow memory (it removes an id that is never a member of `active`). As a function
-- (library.py), a script that calls it is flagged allow-oom, to the same effect.
local function allow_when_full(K)
  redis.call('ZREM', K.active, '')
end
