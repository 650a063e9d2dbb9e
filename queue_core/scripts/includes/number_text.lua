-- The text of a small count (an attempt number, a range bound) for a command argument.
-- Redis 7.0 turns a Lua number argument into text with printf("%.17g"), about 0.3 us
-- apiece; this gives the same text, and keeps the texts of 0..255 in the function
-- library's Lua state, so that after the first use a hot path's counts cost a lookup.
-- (As an EVALSHA script the table starts empty at each call: no gain, no loss.)
local NUMBER_TEXTS = {}

local function number_text(n)
  local text = NUMBER_TEXTS[n]
  if text == nil then
    text = string.format('%.17g', n)
    if n >= 0 and n <= 255 and n == math.floor(n) then
      NUMBER_TEXTS[n] = text
    end
  end
  return text
end
