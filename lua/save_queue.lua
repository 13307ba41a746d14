-- save_queue: compare-and-set of a queue's state document.
--
-- KEYS[1] queue hash           {corral:F}:q:<name>
-- KEYS[2] queue name set       {corral:F}:queues
-- ARGV[1] expected version (0 = never saved)   ARGV[2] JSON document
-- ARGV[3] queue name
--
-- Reply: {1, new version} | {0, stored version}
--
-- Rule: a document is only replaced by a writer that read the version it
-- replaces, so two replicas (or an API call and the queue's engine) never
-- overwrite each other's changes; the loser reloads and applies again.
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0, v}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return {1, v + 1}
