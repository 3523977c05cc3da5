-- Correct a bucket once the real cost is known. KEYS[1]: the bucket. ARGV: capacity, window_s, delta.
-- delta > 0 gives units back (never beyond full); delta < 0 charges without a check (may go into debt).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cap, win, delta = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000, tonumber(ARGV[3])
local v = tonumber(redis.call('GET', KEYS[1]))
if v == nil then
  if delta >= 0 then return 0 end
  v = now
end
if v < now then v = now end
local new = v - delta * win / cap
if new <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now))
return 1
