-- Spend a single-use approval token. KEYS[1]: the token's hash {key_id, max}. ARGV: key_id, cost (micro-USD).
-- Deleted only when it is for this key and covers the cost: a wrong key or a too small token stays usable.
local v = redis.call('HMGET', KEYS[1], 'key_id', 'max')
if not v[1] or v[1] ~= ARGV[1] or tonumber(v[2]) < tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
