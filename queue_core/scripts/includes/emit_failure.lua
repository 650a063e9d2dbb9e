--@include events
-- Report a failed attempt on the events stream: `event` is failed or retry_scheduled,
-- `error_json` the stored error; its stack stays in `errors`, out of the stream.
local function emit_failure(K, event, id, rec, error_json, ...)
  local ok, failure = pcall(cjson.decode, error_json)
  if not ok or type(failure) ~= 'table' then
    failure = {}
  end
  emit(K, event, 'id', id, 'attempts', rec.atm or 0, 'type', tostring(failure.type or ''),
    'reason', tostring(failure.message or ''), ...)
end
