-- remove_member: forgets a channel; the last one out starts the linger.
--
-- KEYS[1] room hash            {corral:F}:r:<c|q>:<name>
-- KEYS[2] the node's hash      {corral:F}:n:<node>
-- ARGV[1] node id   ARGV[2] channel id
--
-- Reply: {'removed', remaining, epoch} | {'not_member'}
--
-- Rule: only the owner's members exist, so a node that does not own the
-- room has nothing to remove. The empty time (`z`, Redis TIME) is what
-- release_room's linger is measured from.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local owner = redis.call('HGET', KEYS[1], 'n')
if owner ~= ARGV[1] then
  return {'not_member'}
end
if redis.call('HDEL', KEYS[1], ':' .. ARGV[2]) == 0 then
  return {'not_member'}
end
local k = redis.call('HINCRBY', KEYS[1], 'k', -1)
if k <= 0 then
  k = 0
  redis.call('HDEL', KEYS[1], 'k')
  redis.call('HSET', KEYS[1], 'z', now)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local nk = redis.call('HINCRBY', KEYS[2], 'k', -1)
  if nk < 0 then
    redis.call('HSET', KEYS[2], 'k', 0)
  end
end
return {'removed', k, tonumber(redis.call('HGET', KEYS[1], 'e'))}
