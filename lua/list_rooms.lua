-- list_rooms: one slice of one node's rooms, for paging.
--
-- KEYS[1] node's rooms         {corral:F}:nr:<node>
-- KEYS[2] farm prefix          {corral:F}:  (room keys)
-- ARGV[1] lex min   ARGV[2] lex max   ARGV[3] count
--
-- Reply: {member, owner, epoch, created, members, empty since or '', ...}
--        six values per room, in the index's byte order
--
-- Rule: read only; the caller walks nodes in byte order and resumes after
-- the cursor's room, so a million rooms page in bounded steps.
local out = {}
local ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(ms) do
  local r = redis.call('HMGET', KEYS[2] .. 'r:' .. m, 'n', 'e', 'c', 'k', 'z')
  if r[1] then
    table.insert(out, m)
    table.insert(out, r[1])
    table.insert(out, r[2])
    table.insert(out, r[3])
    table.insert(out, r[4] or '0')
    table.insert(out, r[5] or '')
  end
end
return out
