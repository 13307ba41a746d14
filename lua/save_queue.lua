-- save_queue: compare-and-set of a queue's state document and its callers.
--
-- KEYS[1] queue hash           {corral:F}:q:<name>
-- KEYS[2] queue name set       {corral:F}:queues
-- KEYS[3] waiting callers      {corral:F}:qc:<name>  (sorted set, score = seq)
-- KEYS[4] the queue's room     {corral:F}:r:q:<name>
-- KEYS[5] farm prefix          {corral:F}:  (the room owner's node hash)
-- ARGV[1] expected version (0 = never saved)   ARGV[2] JSON document
-- ARGV[3] queue name   ARGV[4] the node the engine runs for ('' = any)
-- ARGV[5] n = how many seqs to drop
-- ARGV[6 .. 5+n] seqs to drop, then pairs (seq, caller entry) to write
--
-- Reply: {1, new version} | {0, stored version}
--      | {2, owner or ''} when ARGV[4] no longer owns the queue's room
--
-- Rule: a document is only replaced by a writer that read the version it
-- replaces, so two replicas (or an API call and the queue's engine) never
-- overwrite each other's changes; the loser reloads and applies again. The
-- callers change in the same step, only those that changed: a change costs
-- the same whatever the backlog. The engine of the queue's node passes that
-- node: a transition is saved only while the node still owns the queue's
-- room (healthy), so an engine that has not heard of a move never acts on a
-- node that no longer has the queue, and needs no read of the room first.
if ARGV[4] ~= '' then
  local room = redis.call('HMGET', KEYS[4], 'n', 'g')
  if room[1] ~= ARGV[4] then
    return {2, room[1] or ''}
  end
  local o = redis.call('HMGET', KEYS[5] .. 'n:' .. room[1], 'h', 'g')
  if o[1] ~= '1' or o[2] ~= room[2] then
    return {2, ''}
  end
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0, v}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local n = tonumber(ARGV[5])
for i = 6, 5 + n do
  redis.call('ZREMRANGEBYSCORE', KEYS[3], ARGV[i], ARGV[i])
end
for i = 6 + n, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1])
end
return {1, v + 1}
