-- add_member: records a channel in a room, on the room's owner only.
--
-- KEYS[1] room hash            {corral:F}:r:<c|q>:<name>
-- KEYS[2] epoch sequence       {corral:F}:epoch
-- KEYS[3] the node's hash      {corral:F}:n:<node>
-- KEYS[4] the node's rooms     {corral:F}:nr:<node>
-- KEYS[5] farm prefix          {corral:F}:  (the current owner's keys)
-- ARGV[1] room member `<c|q>:<name>`   ARGV[2] node id   ARGV[3] channel id
-- ARGV[4] role letter (p participant, c caller, a agent)
--
-- Reply: {'added', epoch, members, claimed 0|1} | {'already', epoch, members}
--      | {'moved', owner, epoch} | {'unavailable'}
--
-- Rule: one room, one node. A healthy owner other than the node refuses the
-- member ('moved'). A room with no healthy owner is claimed by the node
-- (even draining: the call is already there), never by a down or unknown
-- node. Adding twice is harmless. Racing a release, the member is never
-- lost: either the release sees it (not empty) or the room is claimed anew.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = KEYS[5]

local room = redis.call('HMGET', KEYS[1], 'n', 'g', 'e', 'k')
local owner, rgen, repoch, rk = room[1], room[2], room[3], room[4]
local healthy = false
if owner then
  local o = redis.call('HMGET', prefix .. 'n:' .. owner, 'h', 'g')
  healthy = (o[1] == '1' and o[2] == rgen)
end
if healthy and owner ~= ARGV[2] then
  return {'moved', owner, tonumber(repoch)}
end

local claimed = 0
if not healthy then
  local n = redis.call('HMGET', KEYS[3], 'h', 'g')
  if n[1] ~= '1' then
    return {'unavailable'}
  end
  if owner then
    redis.call('ZREM', prefix .. 'nr:' .. owner, ARGV[1])
    local okey = prefix .. 'n:' .. owner
    if rk and tonumber(rk) > 0 and redis.call('EXISTS', okey) == 1 then
      redis.call('HINCRBY', okey, 'k', -tonumber(rk))
    end
    redis.call('DEL', KEYS[1])
  end
  repoch = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'n', ARGV[2], 'e', repoch, 'c', now, 'g', n[2])
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  claimed = 1
end

local field = ':' .. ARGV[3]
if redis.call('HEXISTS', KEYS[1], field) == 1 then
  return {'already', tonumber(repoch), tonumber(redis.call('HGET', KEYS[1], 'k'))}
end
redis.call('HSET', KEYS[1], field, ARGV[4] .. string.format('%.0f', now))
local k = redis.call('HINCRBY', KEYS[1], 'k', 1)
redis.call('HDEL', KEYS[1], 'z')
redis.call('HINCRBY', KEYS[3], 'k', 1)
return {'added', tonumber(repoch), k, claimed}
