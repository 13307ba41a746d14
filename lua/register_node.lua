-- register_node: creates or updates a node and marks it healthy.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- KEYS[2] node set             {corral:F}:nodes
-- KEYS[3] health version       {corral:F}:hv
-- KEYS[4] epoch sequence       {corral:F}:epoch
-- ARGV[1] node id   ARGV[2] asterisk_id   ARGV[3] startup time
-- ARGV[4] sip host   ARGV[5] capacity   ARGV[6] max rooms or ''
--
-- Reply: {new_incarnation 0|1, release 0|1}: release = 1 when the node's
--        earlier rooms are stale and the caller must run release_node_rooms.
--
-- Rule: a restarted Asterisk (new asterisk_id or start time) is a new
-- generation, so every room placed before is stale at once (the owner check
-- compares generations) and is released in batches. The operator's drain
-- flag survives registration. A new node, a new generation or a node
-- healthy again gives the farm a new health version (set_node_health).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local n = redis.call('HMGET', KEYS[1], 'aid', 'ast', 'h', 'g')
local new_inc, release = 0, 0
if not n[4] then
  redis.call('HSET', KEYS[1], 'g', 1, 'd', 0, 'ch', 0, 'k', 0)
  new_inc = 1
else
  if n[1] ~= ARGV[2] or n[2] ~= ARGV[3] then
    redis.call('HINCRBY', KEYS[1], 'g', 1)
    new_inc, release = 1, 1
  end
  if n[3] ~= '1' then
    release = 1
  end
end
if new_inc == 1 or n[3] ~= '1' then
  redis.call('SET', KEYS[3], t[1] .. '.' .. t[2] .. '.' .. redis.call('INCR', KEYS[4]))
end
redis.call('HSET', KEYS[1], 'h', 1, 's', 0, 'aid', ARGV[2], 'ast', ARGV[3], 'sip', ARGV[4],
  'cap', ARGV[5], 'u', now)
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], 'max')
else
  redis.call('HSET', KEYS[1], 'max', ARGV[6])
end
redis.call('SADD', KEYS[2], ARGV[1])
return {new_inc, release}
