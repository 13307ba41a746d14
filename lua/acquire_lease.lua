-- acquire_lease: takes or renews a node's lease for a replica.
--
-- KEYS[1] lease                {corral:F}:l:<node>
-- ARGV[1] replica   ARGV[2] ttl ms
--
-- Reply: 1 held by the replica now | 0 held by another replica
--
-- Rule: one replica per node event stream; the lease expires by Redis's
-- clock (PX set here), so a dead replica's lease lapses on its own.
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
