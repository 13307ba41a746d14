-- set_node_drain: sets the operator's drain flag and returns the node.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- KEYS[2] node's rooms         {corral:F}:nr:<node>
-- ARGV[1] '1' draining | '0' not
--
-- Reply: {} unknown node | {rooms, field, value, ...} the node's hash
--
-- Rule: draining means no new rooms (resolve_placement refuses it as a
-- choice) while its running rooms keep their joiners (a draining owner is
-- still healthy). Undrain is the same call with '0'.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'u', now)
local f = redis.call('HGETALL', KEYS[1])
table.insert(f, 1, redis.call('ZCARD', KEYS[2]))
return f
