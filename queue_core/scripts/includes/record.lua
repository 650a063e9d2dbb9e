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

-- Records a fetch wrote lately, by their JSON text: a copy of the table each was encoded
-- from, so that the next read of that very text (the attempt's settle) neither decodes nor
-- checks it again (about a tenth of a settle's time in the scripts: bench/lua_steps.py).
-- Keyed by content, so never stale: a record changed by anything else is other text, read
-- the long way. The table is what decoding the text gives back: every number these
-- scripts write fits cjson's 14 digits. A read takes its entry (the caller owns the
-- table). It lives in the function library's Lua state (an EVALSHA script starts afresh
-- each call and never finds one), is emptied when it holds WRITTEN_MAX records, and is
-- lost, harmlessly, with a restart or a library load.
local WRITTEN_MAX = 4096
local written, written_count = {}, 0

-- Encode `rec` for the `state` hash, remembered for the next read of that text.
local function encode_record(rec)
  local encoded = cjson.encode(rec)
  if written_count >= WRITTEN_MAX then
    written, written_count = {}, 0
  end
  local copy = {}
  for field, value in pairs(rec) do
    copy[field] = value
  end
  if written[encoded] == nil then
    written_count = written_count + 1
  end
  written[encoded] = copy
  return encoded
end

local function read_record(K, id)
  local raw = redis.call('HGET', K.state, id)
  if not raw then
    return nil, 'its record is missing'
  end
  local rec = written[raw]
  if rec then
    written[raw] = nil
    written_count = written_count - 1
    return rec
  end
  return decode_record(raw)
end
