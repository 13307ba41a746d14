-- set_node_suspect: marks a node suspect (a health check of it failed) or
-- clears the mark.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- ARGV[1] '1' suspect | '0' not
--
-- Reply: 1 | 0 unknown node
--
-- Rule: a suspect node takes no new room (resolve_placement refuses it as
-- a choice), but keeps its rooms and their joiners: one failed check is no
-- proof of death (down_after_failures in a row mark it down, which
-- releases its rooms). A registration clears the mark.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 's', ARGV[1])
return 1
