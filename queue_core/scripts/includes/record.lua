-- The job record (`state` hash): JSON that only these scripts write. Every script reads
-- a record through read_record, which checks its shape before anything is written, so a
-- record that is not what these scripts wrote (a manual edit, a bug, a partial restore)
-- never stops a script half-way: the job is quarantined instead (see quarantine).
-- `v` is the job's format version (record and envelope together). A newer one than
-- RECORD_VERSION was written by a newer queue_core: these scripts leave such jobs alone.
local RECORD_VERSION = 1
local MAX_RECORD_BYTES = 65536 -- records are small scalars; a larger one is not ours
-- The type of every field that has one; a number must also be finite (NaN and infinities
-- would make cjson.encode fail after the script's first write). Other fields are left be.
-- tok: lock token; ddk: the dedup key the job holds; cxr: the reason of a cancel request;
-- sch: the scheduler whose run this job is (its `due`: the tick it runs for, ms);
-- par: the ref of a flow child's parent (JSON [queue, id]), fpo: what the child's failure
-- does to it (fail, ignore, remove; absent: it waits); dpn: a parent's pending children
local RECORD_FIELDS = {v = 'number', ts = 'number', ats = 'number', atm = 'number',
  stc = 'number', pon = 'number', fon = 'number', rdy = 'number', p = 'number',
  lifo = 'number', front = 'number', rcn = 'number', rca = 'number', rfn = 'number',
  rfa = 'number', q = 'number', ddt = 'number', rtr = 'number', due = 'number',
  dpn = 'number', tok = 'string', ddk = 'string', cxr = 'string', sch = 'string',
  par = 'string', fpo = 'string'}

-- Returns rec; or nil and the reason it is corrupt; or nil, nil and its newer version.
local function decode_record(raw)
  if #raw > MAX_RECORD_BYTES then
    return nil, 'its record is ' .. #raw .. ' bytes long'
  end
  local ok, rec = pcall(cjson.decode, raw)
  if not ok then
    return nil, 'its record is not valid JSON'
  end
  if type(rec) ~= 'table' or rec[1] ~= nil then
    return nil, 'its record is not a JSON object'
  end
  -- One pass over the fields the record has (a few), not over every known field.
  for field, value in pairs(rec) do
    local kind = RECORD_FIELDS[field]
    if kind == 'number' then
      if type(value) ~= 'number' or value ~= value or value == math.huge
          or value == -math.huge then
        return nil, 'its record field "' .. field .. '" is not a finite number'
      end
    elseif kind == 'string' and type(value) ~= 'string' then
      return nil, 'its record field "' .. field .. '" is not a string'
    end
  end
  if rec.ts == nil then
    return nil, 'its record has no enqueue time "ts"'
  end
  if rec.p ~= nil and (rec.p ~= math.floor(rec.p) or rec.p < -1000000 or rec.p > 1000000) then
    return nil, 'its record field "p" is not a priority'
  end
  if (rec.v or 1) > RECORD_VERSION then
    return nil, nil, rec.v
  end
  return rec
end

local function read_record(K, id)
  local raw = redis.call('HGET', K.state, id)
  if not raw then
    return nil, 'its record is missing'
  end
  return decode_record(raw)
end
