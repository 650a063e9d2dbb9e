--[[
get_dependencies: a parent's children and what is known of each (read only).

KEYS: deps depout

ARGV:
  1  the parent's id

Returns: {refs, outcome_1, ..., outcome_n}: refs the JSON array of the children's refs
(false for a job that is not a parent), outcome_i the i-th child's outcome as
resolve_dependency stored it (a JSON header line, a newline, a value), false if pending.
]]
--@include flow_refs

local raw = redis.call('HGET', K.deps, ARGV[1])
if not raw then
  return {false}
end
local reply = {raw}
for i, ref in ipairs(children_of(K, ARGV[1])) do
  reply[i + 1] = redis.call('HGET', K.depout, dep_field(ARGV[1], ref))
end
return reply
