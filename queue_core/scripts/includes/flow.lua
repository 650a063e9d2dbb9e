-- Flows: a parent job waits in `children` until each of its children has an outcome. A
-- child's queue may live in another Redis Cluster slot than its parent's, so no script
-- touches both queues: a script that ends a child writes its outcome into its own queue's
-- outbox, and the worker (or, after a crash, any worker's outbox sweep) delivers it to the
-- parent's queue with resolve_dependency, then deletes it with ack_outbox. Delivering a
-- message twice changes nothing the second time. Cancels for a parent's pending children
-- travel the same way, the other way down.
-- A job's ref is JSON [queue, id]: queue names and ids may hold any separator.
--@include flow_refs

local function queue_of(K)
  return string.match(K.meta, '{(.*)}') -- queue names have no braces (options.check_name)
end

local function child_ref(K, id)
  return cjson.encode({queue_of(K), id})
end

local function post(K, message, header, value, now)
  redis.call('HSET', K.outbox, message, cjson.encode(header) .. '\n' .. value)
  redis.call('ZADD', K.outboxat, now, message)
end

-- Tell a flow child's parent how it ended: `kind` is completed, failed or removed. A
-- completed child's value travels with it, so that its retention may drop it at once.
local function notify_parent(K, id, rec, kind, now)
  if not rec.par then
    return
  end
  local header = {to = rec.par, from = child_ref(K, id), k = kind, pol = rec.fpo}
  -- The child's headers (its trace context) let the parent's instrumentation link to it.
  local envelope = redis.call('HGET', K.jobs, id)
  local newline = envelope and string.find(envelope, '\n', 1, true)
  if newline then
    local ok, head = pcall(cjson.decode, string.sub(envelope, 1, newline - 1))
    if ok and type(head) == 'table' and type(head.headers) == 'table' then
      header.h = head.headers
    end
  end
  local value = ''
  if kind == 'completed' then
    value = redis.call('HGET', K.results, id) or ''
  elseif kind == 'failed' then
    local ok, err = pcall(cjson.decode, redis.call('HGET', K.errors, id) or '')
    if ok and type(err) == 'table' then
      header.e, header.t = err.message, err.type
    end
  end
  post(K, 'r' .. id, header, value, now)
end

-- A parent that ends before its children did (cancelled, removed) cancels those that
-- have no outcome yet; each cancel cascades to their own children.
local function cancel_children(K, pid, reason, now)
  for _, ref in ipairs(children_of(K, pid)) do
    if redis.call('HEXISTS', K.depout, dep_field(pid, ref)) == 0 then
      post(K, 'x' .. ref, {to = ref, k = 'cancel', e = reason}, '', now)
    end
  end
end
