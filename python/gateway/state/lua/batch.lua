-- Corrections sent together, off the request path: budget deltas (settles, and spend counted in-process while
-- Redis was unreachable) and token-bucket give-backs and debts, summed per counter since the last batch.
-- KEYS: nb budget counters, then token buckets.
-- ARGV: deadline_ms, nb, then per counter slot, delta, ttl_s; then per bucket capacity, window_s, delta.
-- Returns -1 without effect when run after the deadline (server ms; see reserve.lua), else 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
if now > tonumber(ARGV[1]) then return -1 end
local nb = tonumber(ARGV[2])
for i = 1, nb do
  local b = 3 * i
  redis.call('HINCRBY', KEYS[i], ARGV[b], ARGV[b + 1])
  if tonumber(ARGV[b + 2]) > 0 and redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[b + 2]) end
end
-- token buckets: delta > 0 gives back (never beyond full), delta < 0 charges (may go into debt)
local base = 3 * nb + 2
for i = nb + 1, #KEYS do
  local b = base + 3 * (i - nb) - 2
  local cap, win, delta = tonumber(ARGV[b]), tonumber(ARGV[b + 1]) * 1000, tonumber(ARGV[b + 2])
  local v = tonumber(redis.call('GET', KEYS[i]))
  if v ~= nil or delta < 0 then
    if v == nil or v < now then v = now end
    local new = v - delta * win / cap
    if new <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.3f', new), 'PX', math.ceil(new - now))
    end
  end
end
return 1
