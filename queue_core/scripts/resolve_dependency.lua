--[[
resolve_dependency: deliver a flow child's outcome to its parent (includes/flow.lua). The
outcome is stored for the parent to read (job.get_dependencies); the parent's count of
pending children (`dpn`) goes down when the child completed, was removed, or failed with
the ignore or remove policy. At zero, the parent leaves waiting_children for wait. A child
that failed with the fail policy fails its waiting parent (DependencyFailedError), which
in turn tells its own parent. A plain failure keeps the parent waiting, the failure
visible, until the child is retried or removed. Delivering an outcome again changes
nothing; a later outcome of the same child (it was retried) replaces the earlier one.

KEYS: meta jobs state results errors progress logs wait active failed marker corrupt events dedup children deps depout outbox outboxat delayed

ARGV:
  1  the parent's id
  2  the child's ref (JSON [queue, id])
  3  kind: completed, failed or removed
  4  the child's failure policy: fail, ignore, remove, or "" (the parent waits)
  5  the child's error type ("" unless failed)
  6  the child's error message ("" unless failed)
  7  the child's serialized return value ("" unless completed)
  8  the child's headers, JSON ("{}" for none): its trace context

Returns: {status, pending}: status 0 the parent is gone or is not this child's parent
(nothing changed), 1 recorded, 2 recorded and the parent is now waiting, 3 recorded and
the parent failed (or, its record corrupt, was quarantined); pending: the parent's children still pending.
]]
--@include now_ms
--@include wait_score
--@include record
--@include finish
--@include events
--@include quarantine
--@include error_history

local pid, ref, kind, policy = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local etype, emsg, value = ARGV[5], ARGV[6], ARGV[7]
local ok_headers, headers = pcall(cjson.decode, ARGV[8])
local rec, why = read_record(K, pid)
if not rec then
  if why and redis.call('HEXISTS', K.jobs, pid) == 1 then
    -- Corrupt: it would wait for ever, never fetched; it fails, visible, instead.
    quarantine(K, pid, why, now_ms())
    return {3, 0}
  end
  return {0, 0} -- gone (removed, trimmed), or newer: left to what reads it
end
local is_child = false
for _, child in ipairs(children_of(K, pid)) do
  if child == ref then
    is_child = true
    break
  end
end
if not is_child then
  return {0, rec.dpn or 0} -- a job of this id that is not the parent the child had
end

local now = now_ms()
local field = dep_field(pid, ref)
local previous = redis.call('HGET', K.depout, field)
local function status_of(body)
  local newline = string.find(body, '\n', 1, true)
  local ok, head = pcall(cjson.decode, string.sub(body, 1, (newline or 0) - 1))
  return ok and type(head) == 'table' and head.s or nil
end
local was_pending = not previous or status_of(previous) == 'failed'
local status = kind
if kind == 'failed' and policy == 'ignore' then
  status = 'ignored'
elseif kind == 'failed' and policy == 'remove' then
  status = 'removed'
end
local header = {s = status}
if ok_headers and type(headers) == 'table' and next(headers) ~= nil then
  header.h = headers
end
if kind == 'failed' then
  header.e, header.t = emsg, etype
end
redis.call('HSET', K.depout, field, cjson.encode(header) .. '\n' .. value)
local pending_now = status == 'failed'

if not redis.call('ZSCORE', K.children, pid) then
  return {1, rec.dpn or 0} -- it went on already (or failed): the outcome is kept to read
end
if not previous or status_of(previous) ~= status then -- a delivery again says nothing new
  emit(K, 'dependency', 'id', pid, 'child', ref, 'outcome', status)
end
if kind == 'failed' and policy == 'fail' then
  redis.call('ZREM', K.children, pid)
  local target = cjson.decode(ref)
  local message = 'child ' .. target[1] .. ':' .. target[2] .. ' failed: ' .. emsg
  record_error(K, pid, {type = 'DependencyFailedError', message = message, stack = ''}, nil, now)
  rec.atm = (rec.atm or 0) - 1 -- no attempt of the parent ended: finish counts one
  finish(K, pid, rec, K.failed, rec.rfn or -1, rec.rfa or -1, now)
  -- As every failure's event: its type and message, so that a waiter raises the same error
  -- whether it reads the event or, once failed, the job's stored error.
  emit(K, 'failed', 'id', pid, 'type', 'DependencyFailedError', 'reason', message)
  return {3, rec.dpn or 0}
end
if was_pending and not pending_now then
  rec.dpn = (rec.dpn or 1) - 1
elseif pending_now and not was_pending then
  rec.dpn = (rec.dpn or 0) + 1
end
if rec.dpn > 0 then
  redis.call('HSET', K.state, pid, cjson.encode(rec))
  return {1, rec.dpn}
end
rec.dpn = 0
rec.rdy = now -- ready from now: its wait is measured from here
redis.call('HSET', K.state, pid, cjson.encode(rec))
redis.call('ZREM', K.children, pid)
redis.call('ZADD', K.wait, wait_score(K, rec.p or 0, rec.lifo == 1), pid)
emit(K, 'waiting', 'id', pid, 'from', 'waiting_children')
if not settings(K).paused then
  wake_worker(K)
end
return {2, 0}
