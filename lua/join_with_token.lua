-- join_with_token: a redirected call's arrival in one step: its token
-- consumed (once, only on its node), then its member recorded in the
-- token's room on that node.
--
-- KEYS[1] token hash           {corral:F}:t:<token>
-- KEYS[2] epoch sequence       {corral:F}:epoch
-- KEYS[3] the node's hash      {corral:F}:n:<node>
-- KEYS[4] the node's rooms     {corral:F}:nr:<node>
-- KEYS[5] farm prefix          {corral:F}:  (the token's room hash and its
--                               owner's node keys; same hash slot)
-- ARGV[1] the node it arrived on   ARGV[2] the arriving channel id
--
-- Reply: {status, member, field, value, ...}: status 'ok', 'wrong_node' or
--        'expired' and the token's fields, as consume_token gives them, or
--        {'unknown', {}}; member is {} unless status is 'ok', else
--        add_member's reply for the token's room: {'added', epoch, members,
--        claimed 0|1} | {'already', epoch, members} | {'moved', owner,
--        epoch} | {'unavailable'}
--
-- Rule: consume_token's rule for a named consumer, the arriving channel (a
-- token is used once, only on its node, never after its expiry by Redis's
-- clock; the winner keeps it marked used (`u`) until it would have gone,
-- so the same channel on the same node gets 'ok' again, a retry after a
-- timeout that may have consumed it, and anyone else 'unknown'), then
-- add_member's rule for the token's room (one room, one node: a healthy
-- owner elsewhere answers 'moved'; a room without a healthy owner is
-- claimed by the node unless it is down or unknown), with the role the
-- grant implies: conference participant; queue agent when the grant names
-- one, else caller. A token not consumed records nothing.
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then
  return {'unknown', {}}
end
local tok = {}
for i = 1, #f, 2 do
  tok[f[i]] = f[i + 1]
end
local consumer = ARGV[1] .. '/' .. ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tok['u'] then
  if tok['u'] ~= consumer then
    return {'unknown', {}}
  end
else
  local expires = tonumber(tok['x'])
  local status
  if expires == nil or now >= expires then
    status = 'expired'
  elseif tok['t'] ~= ARGV[1] then
    status = 'wrong_node'
  else
    status = 'ok'
  end
  if status ~= 'ok' then
    table.insert(f, 1, {})
    table.insert(f, 1, status)
    return f
  end
  redis.call('HSET', KEYS[1], 'u', consumer)
end

local function reply(member)
  table.insert(f, 1, member)
  table.insert(f, 1, 'ok')
  return f
end
local prefix = KEYS[5]
local member = tok['k'] .. ':' .. tok['r']
local rkey = prefix .. 'r:' .. member
local role = 'p'
if tok['k'] == 'q' then
  role = tok['ag'] and 'a' or 'c'
end

local room = redis.call('HMGET', rkey, 'n', 'g', 'e', 'k')
local owner, epoch = room[1], room[3]
local healthy = false
if owner then
  local o = redis.call('HMGET', prefix .. 'n:' .. owner, 'h', 'g')
  healthy = o[1] == '1' and o[2] == room[2]
end
if healthy and owner ~= ARGV[1] then
  return reply({'moved', owner, tonumber(epoch)})
end
local claimed = 0
if not healthy then
  local n = redis.call('HMGET', KEYS[3], 'h', 'g')
  if n[1] ~= '1' then
    return reply({'unavailable'})
  end
  if owner then
    redis.call('ZREM', prefix .. 'nr:' .. owner, member)
    local okey = prefix .. 'n:' .. owner
    if room[4] and tonumber(room[4]) > 0 and redis.call('EXISTS', okey) == 1 then
      redis.call('HINCRBY', okey, 'k', -tonumber(room[4]))
    end
    redis.call('DEL', rkey)
  end
  epoch = redis.call('INCR', KEYS[2])
  redis.call('HSET', rkey, 'n', ARGV[1], 'e', epoch, 'c', now, 'g', n[2])
  redis.call('ZADD', KEYS[4], 0, member)
  claimed = 1
end
epoch = tonumber(epoch)
if redis.call('HSETNX', rkey, ':' .. ARGV[2], role .. string.format('%.0f', now)) == 0 then
  return reply({'already', epoch, tonumber(redis.call('HGET', rkey, 'k') or '0')})
end
local k = redis.call('HINCRBY', rkey, 'k', 1)
if k == 1 then
  redis.call('HDEL', rkey, 'z')
end
redis.call('HINCRBY', KEYS[3], 'k', 1)
return reply({'added', epoch, k, claimed})
