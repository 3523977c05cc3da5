-- Budgets: reserve an amount (integer nano-dollars) in every counter or in none.
-- A counter is a hash of slots: a calendar period or lifetime uses slot 0 of a key named after the period;
-- a rolling window sums the slots lo..hi (time slices) and charges slot hi, dropping slices older than lo.
-- KEYS: one counter per scope. ARGV: deadline_ms, amount, then per key limit, ttl_s (0 = none), lo, hi.
-- Returns {1, spent after, ...}, {0, failed index (1-based), spent there}, or {-1} when run after the deadline
-- (server ms): the caller timed out and counted the amount in-process, so a late run must not count it again.
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 > tonumber(ARGV[1]) then return {-1} end
local amount = tonumber(ARGV[2])
local spent = {}
for i = 1, #KEYS do
  local b = 4 * i - 1
  local limit, lo, hi = tonumber(ARGV[b]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local fields = {}
  for f = lo, hi do fields[#fields + 1] = f end
  local s = 0
  for _, v in ipairs(redis.call('HMGET', KEYS[i], unpack(fields))) do s = s + (tonumber(v) or 0) end
  if amount > 0 and s + amount > limit then return {0, i, s} end
  spent[i] = s + amount
end
for i = 1, #KEYS do
  local b = 4 * i - 1
  local ttl, lo, hi = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  redis.call('HINCRBY', KEYS[i], hi, amount)
  if hi > lo then
    for _, f in ipairs(redis.call('HKEYS', KEYS[i])) do
      if tonumber(f) < lo then redis.call('HDEL', KEYS[i], f) end
    end
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
local out = {1}
for i = 1, #KEYS do out[#out + 1] = spent[i] end
return out
