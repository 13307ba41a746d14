-- save_queue: compare-and-set of a queue's state document and its callers.
--
-- KEYS[1] queue hash           {corral:F}:q:<name>
-- KEYS[2] queue name set       {corral:F}:queues
-- KEYS[3] waiting callers      {corral:F}:qc:<name>  (sorted set, score = seq)
-- ARGV[1] expected version (0 = never saved)   ARGV[2] JSON document
-- ARGV[3] queue name   ARGV[4] n = how many seqs to drop
-- ARGV[5 .. 4+n] seqs to drop, then pairs (seq, caller entry) to write
--
-- Reply: {1, new version} | {0, stored version}
--
-- Rule: a document is only replaced by a writer that read the version it
-- replaces, so two replicas (or an API call and the queue's engine) never
-- overwrite each other's changes; the loser reloads and applies again. The
-- callers change in the same step, only those that changed: a change costs
-- the same whatever the backlog.
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0, v}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  redis.call('ZREMRANGEBYSCORE', KEYS[3], ARGV[i], ARGV[i])
end
for i = 5 + n, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1])
end
return {1, v + 1}
