-- Cool a deployment down for every replica. KEYS[1]: the cooldowns hash (deployment -> end, server ms).
-- ARGV: deployment, duration_ms. The later end wins; ended cooldowns are dropped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if untl > cur then redis.call('HSET', KEYS[1], ARGV[1], untl) end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) end
end
return 1
