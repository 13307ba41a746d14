-- load_queue: a queue's document and its waiting callers, read at once.
--
-- KEYS[1] queue hash           {corral:F}:q:<name>
-- KEYS[2] waiting callers      {corral:F}:qc:<name>
--
-- Reply: {} when the queue has no document | {version, document, caller
--        entry, ...} with the callers in seq order
--
-- Rule: the document and the callers are read in one step, so a reader
-- never sees the callers of one version with the document of another.
local f = redis.call('HMGET', KEYS[1], 'v', 'd')
if not f[1] then
  return {}
end
local out = {f[1], f[2] or '{}'}
for _, e in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  table.insert(out, e)
end
return out
