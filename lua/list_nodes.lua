-- list_nodes: every registered node, in one consistent read.
--
-- KEYS[1] node set             {corral:F}:nodes
-- KEYS[2] farm prefix          {corral:F}:  (node hashes and room indexes)
--
-- Reply: { {node id, rooms, field, value, ...}, ... } unsorted (the caller
--        sorts by byte order; Lua's string order follows the locale)
--
-- Rule: read only.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HGETALL', KEYS[2] .. 'n:' .. id)
  table.insert(f, 1, redis.call('ZCARD', KEYS[2] .. 'nr:' .. id))
  table.insert(f, 1, id)
  table.insert(out, f)
end
return out
