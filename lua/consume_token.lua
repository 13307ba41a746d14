-- consume_token: uses a token, exactly once and only on its node.
--
-- KEYS[1] token hash           {corral:F}:t:<token>
-- ARGV[1] the node it arrived on
-- ARGV[2] the consuming channel, or '' (then the token is deleted)
--
-- Reply: {status, field, value, field, value, ...} with status 'ok',
--        'wrong_node' or 'expired' and the token's fields; {'unknown'}
--
-- Rule: a token is used once (deleted by the winner, atomically), only on
-- the node it was minted for (a wrong node leaves it in place), and never
-- after its expiry by Redis's clock (the tombstone keeps it readable).
-- Consumed by a named channel, it is kept marked used (`u`) until it would
-- have gone: that channel consuming again gets 'ok' (a retry after a
-- timeout that may have consumed it), anyone else 'unknown'.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then
  return {'unknown'}
end
local to, expires, used
for i = 1, #f, 2 do
  if f[i] == 't' then to = f[i + 1] end
  if f[i] == 'x' then expires = tonumber(f[i + 1]) end
  if f[i] == 'u' then used = f[i + 1] end
end
local consumer = ARGV[1] .. '/' .. (ARGV[2] or '')
if used then
  if ARGV[2] ~= nil and ARGV[2] ~= '' and used == consumer then
    table.insert(f, 1, 'ok')
    return f
  end
  return {'unknown'}
end
local status
if expires == nil or now >= expires then
  status = 'expired'
elseif to ~= ARGV[1] then
  status = 'wrong_node'
else
  if ARGV[2] ~= nil and ARGV[2] ~= '' then
    redis.call('HSET', KEYS[1], 'u', consumer)
  else
    redis.call('DEL', KEYS[1])
  end
  status = 'ok'
end
table.insert(f, 1, status)
return f
