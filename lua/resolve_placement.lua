-- resolve_placement: the one owner decision for a room (compare-and-set).
--
-- KEYS[1] room hash            {corral:F}:r:<c|q>:<name>
-- KEYS[2] epoch sequence       {corral:F}:epoch
-- KEYS[3] chosen node's hash   {corral:F}:n:<choice>
-- KEYS[4] chosen node's rooms  {corral:F}:nr:<choice>
-- KEYS[5] farm prefix          {corral:F}:  (the current owner's node keys are
--                               derived from it; same hash slot)
-- ARGV[1] room member `<c|q>:<name>`   ARGV[2] chosen node id
--
-- Reply: {'owner', node, epoch, created 0|1, previous owner or ''}
--      | {'ineligible'}
--
-- Rule: an existing owner that is healthy (health flag set and the
-- placement's generation is the node's current one; draining is healthy) is
-- returned untouched. Only otherwise is the caller's choice applied, and
-- only if the chosen node is known, healthy, not draining, not suspect (a
-- failed health check) and under its max_rooms. The script never chooses a node. A new placement takes a fresh
-- epoch from the farm-wide sequence (epochs only grow) and starts empty
-- (no `k` means 0 members, no `z` means empty since `c`, to keep it small):
-- members of a dead owner are dropped with the old placement.
local prefix = KEYS[5]

local room = redis.call('HMGET', KEYS[1], 'n', 'g', 'e', 'k')
local owner, rgen, repoch, rk = room[1], room[2], room[3], room[4]
if owner then
  local o = redis.call('HMGET', prefix .. 'n:' .. owner, 'h', 'g')
  if o[1] == '1' and o[2] == rgen then
    return {'owner', owner, tonumber(repoch), 0, ''}
  end
end

local c = redis.call('HMGET', KEYS[3], 'h', 'd', 'g', 'max', 's')
if c[1] ~= '1' or c[2] == '1' or c[5] == '1' then
  return {'ineligible'}
end
if c[4] and redis.call('ZCARD', KEYS[4]) >= tonumber(c[4]) then
  return {'ineligible'}
end

-- Only a new placement needs the clock (the common path above is reads).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if owner then
  redis.call('ZREM', prefix .. 'nr:' .. owner, ARGV[1])
  local okey = prefix .. 'n:' .. owner
  if rk and tonumber(rk) > 0 and redis.call('EXISTS', okey) == 1 then
    redis.call('HINCRBY', okey, 'k', -tonumber(rk))
  end
  redis.call('DEL', KEYS[1])
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'e', epoch, 'c', now, 'g', c[3])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return {'owner', ARGV[2], epoch, 1, owner or ''}
