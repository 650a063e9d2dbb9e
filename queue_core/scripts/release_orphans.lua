--[[
release_orphans: put back the jobs that a worker's fetch took but whose reply the worker
never read (the connection dropped or the call passed its deadline while Redis ran it).
Each fetch carries its own token prefix, so such a job is known exactly: its lock token
starts with the prefix of a call that failed, and the worker is not running it. The job
goes back to the front of its priority, its start not counted, without waiting for its
lock to expire and without counting a stall.

KEYS: meta state wait active marker

ARGV:
  1  n, the number of token prefixes (one per failed fetch call: "<worker>~<call>:")
  2 .. n+1  the prefixes
  then: the ids of the jobs the worker holds (received, running or about to run)

Returns: the ids released.
]]
--@include allow_when_full
--@include now_ms
--@include requeue
--@include record

allow_when_full(K)
local now = now_ms()
local n = tonumber(ARGV[1])
local held = {}
for i = n + 2, #ARGV do
  held[ARGV[i]] = true
end
local released = {}
for _, id in ipairs(redis.call('ZRANGE', K.active, 0, 9999)) do
  if not held[id] then
    local rec = read_record(K, id) -- a corrupt or newer record is left to its own handling
    if rec and rec.tok then
      for i = 2, n + 1 do
        if string.sub(rec.tok, 1, #ARGV[i]) == ARGV[i] then
          rec.tok = nil
          rec.ats = math.max(0, (rec.ats or 1) - 1)
          requeue(K, id, rec, now, true)
          released[#released + 1] = id
          break
        end
      end
    end
  end
end
if #released > 0 then
  wake_worker(K)
end
return released
