-- Flow refs: a job's ref is JSON [queue, id] (queue names and ids may hold any separator).

-- The field of `depout` that holds the outcome of child `ref` for parent `pid`.
local function dep_field(pid, ref)
  return cjson.encode({pid, ref})
end

-- The refs in a parent's `deps` value `raw` (nil or false: none), each encoded by cjson as
-- child_ref encodes it, so that they compare and key alike.
local function decode_children(raw)
  if not raw then
    return {}
  end
  local ok, refs = pcall(cjson.decode, raw)
  if not ok or type(refs) ~= 'table' then
    return {}
  end
  local out = {}
  for i, ref in ipairs(refs) do
    out[i] = cjson.encode(ref)
  end
  return out
end

-- The refs of a parent's children (an empty list for a job that is not a parent).
local function children_of(K, pid)
  return decode_children(redis.call('HGET', K.deps, pid))
end
