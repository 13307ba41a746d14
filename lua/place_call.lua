-- place_call: a call's arrival in one step: the owner decision, then the
-- member record (the room lives where the call landed) or a token bound to
-- the owner (it lives elsewhere).
--
-- KEYS[1] room hash            {corral:F}:r:<c|q>:<name>
-- KEYS[2] epoch sequence       {corral:F}:epoch
-- KEYS[3] chosen node's hash   {corral:F}:n:<choice>
-- KEYS[4] chosen node's rooms  {corral:F}:nr:<choice>
-- KEYS[5] landing node's hash  {corral:F}:n:<landing>
-- KEYS[6] token hash           {corral:F}:t:<token>  (untouched when ARGV[6] is '')
-- KEYS[7] farm prefix          {corral:F}:  (the current owner's node keys)
-- ARGV[1] room member `<c|q>:<name>`   ARGV[2] chosen node id
-- ARGV[3] landing node id   ARGV[4] channel id   ARGV[5] role letter
-- ARGV[6] token ttl ms ('' = mint none)   ARGV[7] tombstone ms
-- ARGV[8] caller   ARGV[9] hops   ARGV[10] queue agent ('' = none)
--
-- Reply: {'joined', epoch, members, created 0|1, previous or '', already 0|1}
--      | {'elsewhere', owner, epoch, created 0|1, previous or '',
--         minted ms, expires ms}   (minted 0: no token minted)
--      | {'ineligible'}
--
-- Rule: resolve_placement's rule decides the owner: a healthy owner stays;
-- else the caller's choice, only if known, up, not draining, not suspect
-- (a failed health check) and under max_rooms (the script never chooses),
-- with a fresh epoch and no members.
-- In the same step add_member's rule records the member when the owner is
-- the landing node (a member only ever lives on the owner), or
-- mint_token's rule stores a token bound to the owner (expiry by Redis's
-- clock; an existing token is never overwritten). 'ineligible' writes
-- nothing. Lean on purpose: an arrival for a placed room is two HMGETs and
-- the writes of its outcome.
local prefix = KEYS[7]
local room = redis.call('HMGET', KEYS[1], 'n', 'g', 'e', 'k')
local owner, epoch = room[1], room[3]
local healthy = false
if owner then
  local o = redis.call('HMGET', prefix .. 'n:' .. owner, 'h', 'g')
  healthy = o[1] == '1' and o[2] == room[2]
end
local now
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end

local created, previous = 0, ''
if not healthy then
  local c = redis.call('HMGET', KEYS[3], 'h', 'd', 'g', 'max', 's')
  if c[1] ~= '1' or c[2] == '1' or c[5] == '1' then
    return {'ineligible'}
  end
  if c[4] and redis.call('ZCARD', KEYS[4]) >= tonumber(c[4]) then
    return {'ineligible'}
  end
  if owner then
    redis.call('ZREM', prefix .. 'nr:' .. owner, ARGV[1])
    local okey = prefix .. 'n:' .. owner
    if room[4] and tonumber(room[4]) > 0 and redis.call('EXISTS', okey) == 1 then
      redis.call('HINCRBY', okey, 'k', -tonumber(room[4]))
    end
    redis.call('DEL', KEYS[1])
    previous = owner
  end
  epoch = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'n', ARGV[2], 'e', epoch, 'c', clock(), 'g', c[3])
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  owner, created = ARGV[2], 1
end
epoch = tonumber(epoch)

if owner == ARGV[3] then
  if redis.call('HSETNX', KEYS[1], ':' .. ARGV[4], ARGV[5] .. string.format('%.0f', clock())) == 0 then
    return {'joined', epoch, tonumber(redis.call('HGET', KEYS[1], 'k') or '0'), created, previous, 1}
  end
  local k = redis.call('HINCRBY', KEYS[1], 'k', 1)
  if k == 1 then
    redis.call('HDEL', KEYS[1], 'z')
  end
  redis.call('HINCRBY', KEYS[5], 'k', 1)
  return {'joined', epoch, k, created, previous, 0}
end

if ARGV[6] == '' or redis.call('EXISTS', KEYS[6]) == 1 then
  return {'elsewhere', owner, epoch, created, previous, 0, 0}
end
local ttl = tonumber(ARGV[6])
local expires = clock() + ttl
redis.call('HSET', KEYS[6], 'k', string.sub(ARGV[1], 1, 1), 'r', string.sub(ARGV[1], 3),
  'f', ARGV[3], 't', owner, 'ch', ARGV[4], 'cl', ARGV[8], 'h', ARGV[9], 'm', now, 'x', expires)
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[6], 'ag', ARGV[10])
end
redis.call('PEXPIRE', KEYS[6], ttl + tonumber(ARGV[7]))
return {'elsewhere', owner, epoch, created, previous, now, expires}
