-- Drop reservations by id on one host.
--
-- KEYS[1]  P:resource:scheduled:{H}  reservations by id
-- ARGV     the ids to drop
--
-- Returns the ids that were there and are now gone (none if the key is not a hash).

local removed = {}
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return removed end
for _, id in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[1], id) == 1 then removed[#removed + 1] = id end
end
return removed
