-- Correct reservations by delta (actual - reserved) in the slot each was charged in.
-- KEYS: counters. ARGV: deadline_ms, delta, then per key its slot. A counter whose period has expired is left
-- alone. Returns -1 without effect when run after the deadline (see reserve.lua).
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 > tonumber(ARGV[1]) then return -1 end
local delta = tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], ARGV[i + 2], delta) end
end
return 1
