-- set_node_health: sets a node's health flag.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- KEYS[2] health version       {corral:F}:hv
-- KEYS[3] epoch sequence       {corral:F}:epoch
-- ARGV[1] '1' healthy | '0' down
--
-- Reply: -1 unknown node | 0 unchanged | 1 changed
--
-- Rule: going down starts a new generation, so every room the node owned is
-- stale from this instant (no joiner is sent to a dead node, even before
-- release_node_rooms has deleted them, and even if the node comes back).
-- A change gives the farm a new health version (a value never seen before,
-- also across a store restarted empty: Redis's clock and a fresh epoch), so
-- a replica's copy of the healthy nodes is known stale at its next read.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HGET', KEYS[1], 'h')
if not h then
  return -1
end
local changed = 0
if h ~= ARGV[1] then
  changed = 1
  if ARGV[1] == '0' then
    redis.call('HINCRBY', KEYS[1], 'g', 1)
  end
  redis.call('SET', KEYS[2], t[1] .. '.' .. t[2] .. '.' .. redis.call('INCR', KEYS[3]))
end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'u', now)
return changed
