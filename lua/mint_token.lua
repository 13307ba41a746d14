-- mint_token: stores a single-use redirect token.
--
-- KEYS[1] token hash           {corral:F}:t:<token>
-- ARGV[1] ttl ms   ARGV[2] tombstone ms   ARGV[3] room kind letter
-- ARGV[4] room name   ARGV[5] from node   ARGV[6] to node   ARGV[7] channel
-- ARGV[8] caller   ARGV[9] hops   ARGV[10] queue agent ('' = none)
--
-- Reply: {1, minted ms, expires ms} | {0} when the token exists already
--
-- Rule: a token expires by Redis's clock (TIME, PEXPIRE set here), never a
-- replica's. The key outlives the expiry by the tombstone so that a late
-- arrival is told "expired", not "unknown". An existing token is never
-- overwritten.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local ttl = tonumber(ARGV[1])
local expires = now + ttl
redis.call('HSET', KEYS[1], 'k', ARGV[3], 'r', ARGV[4], 'f', ARGV[5], 't', ARGV[6],
  'ch', ARGV[7], 'cl', ARGV[8], 'h', ARGV[9], 'm', now, 'x', expires)
if ARGV[10] ~= nil and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[1], 'ag', ARGV[10])
end
redis.call('PEXPIRE', KEYS[1], ttl + tonumber(ARGV[2]))
return {1, now, expires}
