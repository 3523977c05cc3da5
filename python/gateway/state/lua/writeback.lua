-- Spend counted in-process while Redis was unreachable, written back. KEYS[1]: a counter.
-- ARGV: deadline_ms, slot, delta, ttl_s. Returns -1 without effect when run after the deadline (see reserve.lua).
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 > tonumber(ARGV[1]) then return -1 end
redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[3])
if tonumber(ARGV[4]) > 0 and redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
