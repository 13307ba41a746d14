-- release_room: forgets an empty room's placement, if nothing changed.
--
-- KEYS[1] room hash            {corral:F}:r:<c|q>:<name>
-- KEYS[2] farm prefix          {corral:F}:  (the owner's room index)
-- ARGV[1] room member `<c|q>:<name>`   ARGV[2] epoch the caller saw
-- ARGV[3] linger in ms
--
-- Reply: {'released'} | {'not_found'} | {'epoch_changed', epoch}
--      | {'not_empty'} | {'too_soon'}
--
-- Rule: clear only with ownership. A room is released only if its epoch is
-- still the caller's (it was not re-placed), it has no member (a racing
-- join wins), and it has been empty for the linger by Redis's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local r = redis.call('HMGET', KEYS[1], 'n', 'e', 'k', 'z', 'c')
local owner, epoch, k, z, c = r[1], r[2], r[3], r[4], r[5]
if not owner then
  return {'not_found'}
end
if epoch ~= ARGV[2] then
  return {'epoch_changed', tonumber(epoch)}
end
if tonumber(k or '0') > 0 then
  return {'not_empty'}
end
local since = tonumber(z or c or '0')
if now - since < tonumber(ARGV[3]) then
  return {'too_soon'}
end
redis.call('ZREM', KEYS[2] .. 'nr:' .. owner, ARGV[1])
redis.call('DEL', KEYS[1])
return {'released'}
