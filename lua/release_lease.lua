-- release_lease: gives a node's lease up, only if the replica holds it.
--
-- KEYS[1] lease                {corral:F}:l:<node>
-- ARGV[1] replica
--
-- Reply: 1 released | 0 not held by the replica
--
-- Rule: a replica never frees a lease another replica holds.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
