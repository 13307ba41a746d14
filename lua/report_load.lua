-- report_load: records a node's reported load.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- ARGV[1] channels
--
-- Reply: 1 | 0 unknown node
--
-- Rule: only a registered node has a load (no ghost node is created).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'ch', ARGV[1], 'u', now)
return 1
