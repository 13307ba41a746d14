-- node_view: the farm's health version and its healthy nodes, read at
-- once (a replica's copy for deciding on placed rooms without a script).
--
-- KEYS[1] node set             {corral:F}:nodes
-- KEYS[2] health version       {corral:F}:hv
-- KEYS[3] farm prefix          {corral:F}:  (node keys derived; same slot)
--
-- Reply: {version or '', node id, generation, node id, generation, ...}:
--        every node that is healthy, with its generation.
--
-- Rule: read only. A room placed on one of these nodes with that
-- generation has a healthy owner for as long as the version is unchanged
-- (set_node_health and register_node give a new one at every change of a
-- node's health or generation).
local out = {redis.call('GET', KEYS[2]) or ''}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local n = redis.call('HMGET', KEYS[3] .. 'n:' .. id, 'h', 'g')
  if n[1] == '1' and n[2] then
    out[#out + 1] = id
    out[#out + 1] = n[2]
  end
end
return out
