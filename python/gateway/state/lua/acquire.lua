-- Rate limits: GCRA, the same arithmetic as the Rust core (rust/src/ratelimit.rs), all-or-nothing.
-- A bucket's whole state is its theoretical arrival time (tat, ms on the server clock). It holds
-- capacity - (tat - now) / interval tokens (interval = window / capacity), is full when tat <= now, and
-- expires exactly then (forgetting a full bucket is lossless).
-- KEYS: one bucket per check. ARGV: per check capacity, window_s, cost.
-- Returns {allowed, failed (1-based, 0 = none), retry_after_ms (-1 = never fits), then per check
-- remaining and reset_ms (time until full)}, numbers as strings (Lua numbers would be truncated to integers).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS
local tat, before = {}, {}
for i = 1, n do
  local k = KEYS[i]
  if tat[k] == nil then
    local v = tonumber(redis.call('GET', k)) or now
    if v < now then v = now end
    tat[k], before[k] = v, v
  end
end
local failed, retry = 0, 0
for i = 1, n do
  local cap = tonumber(ARGV[3 * i - 2])
  local win = tonumber(ARGV[3 * i - 1]) * 1000
  local cost = tonumber(ARGV[3 * i])
  if cost > cap * (1 + 1e-9) then
    failed, retry = i, -1
    break
  end
  local new = tat[KEYS[i]] + cost * win / cap
  local over = new - now - win
  if over > win * 1e-9 then
    failed, retry = i, over
    break
  end
  tat[KEYS[i]] = new
end
local state = before
if failed == 0 then
  state = tat
  for k, v in pairs(tat) do
    if v > now then
      redis.call('SET', k, string.format('%.3f', v), 'PX', math.ceil(v - now))
    end
  end
end
local out = {failed == 0 and 1 or 0, failed, string.format('%.3f', retry)}
for i = 1, n do
  local cap, win = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]) * 1000
  local ahead = math.max(state[KEYS[i]] - now, 0)
  out[#out + 1] = string.format('%.6f', cap - ahead * cap / win)
  out[#out + 1] = string.format('%.3f', ahead)
end
return out
