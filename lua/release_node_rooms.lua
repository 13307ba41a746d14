-- release_node_rooms: deletes one batch of a node's stale rooms.
--
-- KEYS[1] node hash            {corral:F}:n:<node>
-- KEYS[2] node's rooms         {corral:F}:nr:<node>
-- KEYS[3] farm prefix          {corral:F}:  (room keys are derived from the
--                               index members; same hash slot)
-- ARGV[1] node id   ARGV[2] resume after this member ('' = from the start)
-- ARGV[3] batch size
--
-- Reply: {released, last member of the batch or '' when done}
--
-- Rule: a room is deleted only if it is still this node's and stale (node
-- down, or placed by an earlier generation); a room placed since, by this
-- node's new generation or by another node, is left alone. Called in a loop
-- by register_node and set_node_health so no call blocks Redis for long.
local n = redis.call('HMGET', KEYS[1], 'h', 'g')
local h, g = n[1], n[2]
local min = '-'
if ARGV[2] ~= '' then
  min = '(' .. ARGV[2]
end
local batch = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYLEX', KEYS[2], min, '+', 'LIMIT', 0, batch)
local released = 0
for _, m in ipairs(members) do
  local rkey = KEYS[3] .. 'r:' .. m
  local r = redis.call('HMGET', rkey, 'n', 'g', 'k')
  if r[1] ~= ARGV[1] then
    redis.call('ZREM', KEYS[2], m)
  elseif h ~= '1' or r[2] ~= g then
    redis.call('DEL', rkey)
    redis.call('ZREM', KEYS[2], m)
    released = released + 1
    if h and r[3] and tonumber(r[3]) > 0 then
      redis.call('HINCRBY', KEYS[1], 'k', -tonumber(r[3]))
    end
  end
end
if h and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], 'k', 0)
end
local last = ''
if #members == batch then
  last = members[#members]
end
return {released, last}
